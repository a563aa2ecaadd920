//! Cross-crate tests of the fabnet workspace: architecture invariants that read
//! the manifests, and end-to-end runs of the pipeline. The library itself is
//! empty; everything lives under `tests/`.
