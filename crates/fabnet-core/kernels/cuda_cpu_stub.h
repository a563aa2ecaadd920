// Lets check_gpu.py --emulate-cpu compile warp.cu with g++ as a plain C++
// shared library, to check the kernels' logic (and the script itself) on a
// machine without a GPU. Each kernel runs as one thread of a 1x1 launch: the
// grid-stride loops then visit every work item in order. Not a CUDA model:
// atomics are plain additions, and float rounding (no FMA contraction) can
// differ from the GPU's in the last bit.
#include <algorithm>
#include <cmath>
using std::floor;
using std::isfinite;
using std::min;
using std::rint;
#define __global__
#define __device__
#define __forceinline__ inline
struct Dim3 {
    unsigned x, y, z;
};
static const Dim3 blockIdx = {0, 0, 0}, threadIdx = {0, 0, 0};
static const Dim3 blockDim = {1, 1, 1}, gridDim = {1, 1, 1};
template <typename T>
T atomicAdd(T *a, T v) {
    T old = *a;
    *a += v;
    return old;
}
