// CUDA kernels of fabnet-core's warp ops: bilinear/nearest grid sampling and
// bilinear resizing, forward and backward, for float and double.
//
// The semantics are those of src/ops/kernel.rs (PyTorch's grid_sample and
// interpolate(mode="bilinear")): the same unnormalisation, corner weights,
// padding, border-clamp derivative and the same rule for non-finite grid
// values (the sample reads nothing and passes no gradient).
//
// Built to PTX by build.rs with `--features cuda`, and loaded unchanged by
// kernels/check_gpu.py through CuPy (NVRTC), so this file includes no host
// headers. All tensors are contiguous, NCHW for images and (N, Ho, Wo, 2),
// x first, for grids. Integer arguments: padding 0 = zeros, 1 = border;
// mode 0 = bilinear, 1 = nearest; align_corners 0 or 1.

template <typename T>
__device__ __forceinline__ void atomic_add(T *addr, T v) {
    atomicAdd(addr, v);
}

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 600
// atomicAdd on double needs sm_60; emulate it with compare-and-swap.
template <>
__device__ __forceinline__ void atomic_add<double>(double *addr, double v) {
    unsigned long long *p = (unsigned long long *)addr;
    unsigned long long old = *p, assumed;
    do {
        assumed = old;
        old = atomicCAS(p, assumed, __double_as_longlong(v + __longlong_as_double(assumed)));
    } while (assumed != old);
}
#endif

// Pixel coordinate along one axis of `size` pixels after padding, and its
// derivative with respect to the grid coordinate.
template <typename T>
__device__ __forceinline__ void axis_coord(T g, int size, int padding, int align_corners,
                                           T &x, T &d) {
    const T one = T(1), half = T(0.5);
    T scale;
    if (align_corners) {
        x = ((g + one) * half) * T(size - 1);
        scale = T(size - 1) * half;
    } else {
        x = ((g + one) * T(size) - one) * half;
        scale = T(size) * half;
    }
    d = scale;
    if (padding == 1) {
        const T hi = T(size - 1);
        // PyTorch's clamp passes no gradient on the border itself either.
        d = (x > T(0) && x < hi) ? scale : T(0);
        x = x < T(0) ? T(0) : x;
        x = x > hi ? hi : x;
    }
    // Non-finite input, or a pixel coordinate that overflowed (zero padding).
    if (!isfinite(g) || !isfinite(x)) {
        x = T(-4);
        d = T(0);
    }
}

template <typename T>
__device__ __forceinline__ T clamp_to(T x, T lo, T hi) {
    x = x < lo ? lo : x;
    return x > hi ? hi : x;
}

// Geometry of one sample: the nw corner, which of the 4 corners (nw, ne, sw,
// se) are inside, the weights and the fractional position.
template <typename T>
struct Cell {
    int x0, y0;
    bool v[4];
    T w[4];
    T wx0, wx1, wy0, wy1, mx, my;
};

template <typename T>
__device__ __forceinline__ Cell<T> bilinear_cell(T gx, T gy, int H, int W, int padding,
                                                 int align_corners) {
    Cell<T> c;
    T ix, iy;
    axis_coord(gx, W, padding, align_corners, ix, c.mx);
    axis_coord(gy, H, padding, align_corners, iy, c.my);
    // Clamping before the floor only moves cells whose corners all lie
    // outside; it keeps huge coordinates overflow-free.
    c.x0 = (int)floor(clamp_to(ix, T(-2), T(W)));
    c.y0 = (int)floor(clamp_to(iy, T(-2), T(H)));
    const T x0f = T(c.x0), y0f = T(c.y0);
    c.wx0 = (x0f + T(1)) - ix;
    c.wx1 = ix - x0f;
    c.wy0 = (y0f + T(1)) - iy;
    c.wy1 = iy - y0f;
    const bool vx0 = c.x0 >= 0 && c.x0 < W, vx1 = c.x0 + 1 >= 0 && c.x0 + 1 < W;
    const bool vy0 = c.y0 >= 0 && c.y0 < H, vy1 = c.y0 + 1 >= 0 && c.y0 + 1 < H;
    c.v[0] = vx0 && vy0;
    c.v[1] = vx1 && vy0;
    c.v[2] = vx0 && vy1;
    c.v[3] = vx1 && vy1;
    c.w[0] = c.wx0 * c.wy0;
    c.w[1] = c.wx1 * c.wy0;
    c.w[2] = c.wx0 * c.wy1;
    c.w[3] = c.wx1 * c.wy1;
    return c;
}

// Nearest pixel offset inside an (H, W) plane, or -1 when outside.
template <typename T>
__device__ __forceinline__ long nearest_offset(T gx, T gy, int H, int W, int padding,
                                               int align_corners) {
    T ix, iy, d;
    axis_coord(gx, W, padding, align_corners, ix, d);
    axis_coord(gy, H, padding, align_corners, iy, d);
    const int x = (int)rint(clamp_to(ix, T(-2), T(W)));
    const int y = (int)rint(clamp_to(iy, T(-2), T(H)));
    if (x < 0 || x >= W || y < 0 || y >= H) return -1;
    return (long)y * W + x;
}

// One thread per output point (n, oy, ox); loops over channels.
template <typename T>
__device__ void grid_sample_fwd(const T *input, const T *grid, T *out, int N, int C, int H,
                                int W, int Ho, int Wo, int padding, int align_corners,
                                int mode) {
    const long total = (long)N * Ho * Wo;
    const long plane_in = (long)H * W, plane_out = (long)Ho * Wo;
    for (long p = blockIdx.x * (long)blockDim.x + threadIdx.x; p < total;
         p += (long)blockDim.x * gridDim.x) {
        const long n = p / plane_out, pix = p % plane_out;
        const T gx = grid[2 * p], gy = grid[2 * p + 1];
        const T *src = input + n * C * plane_in;
        T *dst = out + n * C * plane_out + pix;
        if (mode == 1) {
            const long off = nearest_offset(gx, gy, H, W, padding, align_corners);
            for (int c = 0; c < C; ++c)
                dst[c * plane_out] = off >= 0 ? src[c * plane_in + off] : T(0);
            continue;
        }
        const Cell<T> k = bilinear_cell(gx, gy, H, W, padding, align_corners);
        const long base = (long)k.y0 * W + k.x0;
        const long delta[4] = {0, 1, W, W + 1};
        for (int c = 0; c < C; ++c) {
            const T *plane = src + c * plane_in;
            T acc = T(0);
            for (int j = 0; j < 4; ++j)
                if (k.v[j]) acc += k.w[j] * plane[base + delta[j]];
            dst[c * plane_out] = acc;
        }
    }
}

// One thread per output point. grad_input (zeroed by the caller, may be
// null) receives atomic scatters; grad_grid (may be null) is written.
template <typename T>
__device__ void grid_sample_bwd(const T *grad_out, const T *input, const T *grid,
                                T *grad_input, T *grad_grid, int N, int C, int H, int W, int Ho,
                                int Wo, int padding, int align_corners, int mode) {
    const long total = (long)N * Ho * Wo;
    const long plane_in = (long)H * W, plane_out = (long)Ho * Wo;
    for (long p = blockIdx.x * (long)blockDim.x + threadIdx.x; p < total;
         p += (long)blockDim.x * gridDim.x) {
        const long n = p / plane_out, pix = p % plane_out;
        const T gx = grid[2 * p], gy = grid[2 * p + 1];
        const T *go = grad_out + n * C * plane_out + pix;
        if (mode == 1) {
            const long off = nearest_offset(gx, gy, H, W, padding, align_corners);
            if (grad_input && off >= 0)
                for (int c = 0; c < C; ++c)
                    atomic_add(grad_input + (n * C + c) * plane_in + off, go[c * plane_out]);
            if (grad_grid) {
                grad_grid[2 * p] = T(0);
                grad_grid[2 * p + 1] = T(0);
            }
            continue;
        }
        const Cell<T> k = bilinear_cell(gx, gy, H, W, padding, align_corners);
        const long base = (long)k.y0 * W + k.x0;
        const long delta[4] = {0, 1, W, W + 1};
        T ax = T(0), ay = T(0);
        for (int c = 0; c < C; ++c) {
            const T g = go[c * plane_out];
            if (grad_grid) {
                const T *plane = input + (n * C + c) * plane_in;
                T v[4];
                for (int j = 0; j < 4; ++j) v[j] = k.v[j] ? plane[base + delta[j]] : T(0);
                ax += g * (k.wy0 * (v[1] - v[0]) + k.wy1 * (v[3] - v[2]));
                ay += g * (k.wx0 * (v[2] - v[0]) + k.wx1 * (v[3] - v[1]));
            }
            if (grad_input) {
                T *gi = grad_input + (n * C + c) * plane_in;
                for (int j = 0; j < 4; ++j)
                    if (k.v[j]) atomic_add(gi + base + delta[j], k.w[j] * g);
            }
        }
        if (grad_grid) {
            grad_grid[2 * p] = ax * k.mx;
            grad_grid[2 * p + 1] = ay * k.my;
        }
    }
}

// Source indices and weights of output index `o` along one resized axis.
template <typename T>
__device__ __forceinline__ void resize_axis(int o, int in, int out, int align_corners, int &i0,
                                            int &i1, T &l0, T &l1) {
    T src;
    if (align_corners) {
        const T scale = out > 1 ? T(in - 1) / T(out - 1) : T(0);
        src = scale * T(o);
    } else {
        const T scale = T(in) / T(out);
        src = scale * (T(o) + T(0.5)) - T(0.5);
        src = src < T(0) ? T(0) : src;
    }
    i0 = min((int)floor(src), in - 1);
    l1 = clamp_to(src - T(i0), T(0), T(1));
    l0 = T(1) - l1;
    i1 = i0 + (i0 < in - 1 ? 1 : 0);
}

// One thread per output element of `planes` planes (H, W) -> (OH, OW).
template <typename T>
__device__ void upsample_fwd(const T *x, T *out, int planes, int H, int W, int OH, int OW,
                             int align_corners) {
    const long total = (long)planes * OH * OW;
    for (long e = blockIdx.x * (long)blockDim.x + threadIdx.x; e < total;
         e += (long)blockDim.x * gridDim.x) {
        const int ox = e % OW, oy = (e / OW) % OH;
        const long p = e / ((long)OH * OW);
        int x0, x1, y0, y1;
        T lx0, lx1, ly0, ly1;
        resize_axis(ox, W, OW, align_corners, x0, x1, lx0, lx1);
        resize_axis(oy, H, OH, align_corners, y0, y1, ly0, ly1);
        const T *src = x + p * H * W;
        const T left = ly0 * src[(long)y0 * W + x0] + ly1 * src[(long)y1 * W + x0];
        const T right = ly0 * src[(long)y0 * W + x1] + ly1 * src[(long)y1 * W + x1];
        out[e] = lx0 * left + lx1 * right;
    }
}

// Transpose of upsample_fwd: one thread per output element scatters its
// gradient into grad_x (zeroed by the caller).
template <typename T>
__device__ void upsample_bwd(const T *g, T *grad_x, int planes, int H, int W, int OH, int OW,
                             int align_corners) {
    const long total = (long)planes * OH * OW;
    for (long e = blockIdx.x * (long)blockDim.x + threadIdx.x; e < total;
         e += (long)blockDim.x * gridDim.x) {
        const int ox = e % OW, oy = (e / OW) % OH;
        const long p = e / ((long)OH * OW);
        int x0, x1, y0, y1;
        T lx0, lx1, ly0, ly1;
        resize_axis(ox, W, OW, align_corners, x0, x1, lx0, lx1);
        resize_axis(oy, H, OH, align_corners, y0, y1, ly0, ly1);
        T *dst = grad_x + p * H * W;
        const T v = g[e];
        atomic_add(dst + (long)y0 * W + x0, ly0 * lx0 * v);
        atomic_add(dst + (long)y0 * W + x1, ly0 * lx1 * v);
        atomic_add(dst + (long)y1 * W + x0, ly1 * lx0 * v);
        atomic_add(dst + (long)y1 * W + x1, ly1 * lx1 * v);
    }
}

#define WARP_KERNELS(T, S)                                                                      \
    extern "C" __global__ void grid_sample_fwd_##S(                                             \
        const T *input, const T *grid, T *out, int N, int C, int H, int W, int Ho, int Wo,      \
        int padding, int align_corners, int mode) {                                             \
        grid_sample_fwd<T>(input, grid, out, N, C, H, W, Ho, Wo, padding, align_corners, mode); \
    }                                                                                           \
    extern "C" __global__ void grid_sample_bwd_##S(                                             \
        const T *grad_out, const T *input, const T *grid, T *grad_input, T *grad_grid, int N,   \
        int C, int H, int W, int Ho, int Wo, int padding, int align_corners, int mode) {        \
        grid_sample_bwd<T>(grad_out, input, grid, grad_input, grad_grid, N, C, H, W, Ho, Wo,    \
                           padding, align_corners, mode);                                       \
    }                                                                                           \
    extern "C" __global__ void upsample_bilinear2d_fwd_##S(                                     \
        const T *x, T *out, int planes, int H, int W, int OH, int OW, int align_corners) {      \
        upsample_fwd<T>(x, out, planes, H, W, OH, OW, align_corners);                           \
    }                                                                                           \
    extern "C" __global__ void upsample_bilinear2d_bwd_##S(                                     \
        const T *g, T *grad_x, int planes, int H, int W, int OH, int OW, int align_corners) {   \
        upsample_bwd<T>(g, grad_x, planes, H, W, OH, OW, align_corners);                        \
    }

WARP_KERNELS(float, f32)
WARP_KERNELS(double, f64)
