//! Embedding matrices on disk: `.npy` (see [`crate::npy`]) or `.safetensors` with one float32 tensor
//! named `embeddings` of shape `(N, D)`, each with an `index.csv` naming the rows in order
//! (header `path`, or `video,frame`).

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use crate::csv::{quote, split_line};
use crate::error::{ProbeError, Result};
use crate::fsutil::{read_text, write_atomic};
use crate::linalg::Matrix;
use crate::npy::{read_npy, write_npy, NpyMmap};

/// The tensor name used in `.safetensors` embedding files.
pub const SAFETENSORS_KEY: &str = "embeddings";

/// An in-memory float32 matrix `(rows, cols)`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    /// N.
    pub rows: usize,
    /// D.
    pub cols: usize,
    /// `rows * cols` values, row-major.
    pub data: Vec<f32>,
}

/// Anything that can hand out contiguous row ranges of an `(N, D)` float32 matrix: in-memory
/// [`Embeddings`], a memory-mapped [`NpyMmap`] or [`SafetensorsMmap`].
pub trait RowSource: Sync {
    /// N.
    fn n_rows(&self) -> usize;
    /// D.
    fn dim(&self) -> usize;
    /// Replaces `out` with rows `start..end`, row-major (`(end − start) · D` values).
    fn read_rows(&self, start: usize, end: usize, out: &mut Vec<f32>) -> Result<()>;
}

impl RowSource for Embeddings {
    fn n_rows(&self) -> usize {
        self.rows
    }

    fn dim(&self) -> usize {
        self.cols
    }

    fn read_rows(&self, start: usize, end: usize, out: &mut Vec<f32>) -> Result<()> {
        if start > end || end > self.rows {
            return Err(ProbeError::Invalid(format!(
                "rows {start}..{end} out of 0..{}",
                self.rows
            )));
        }
        out.clear();
        out.extend_from_slice(&self.data[start * self.cols..end * self.cols]);
        Ok(())
    }
}

/// Decodes little-endian float32 bytes (length a multiple of 4).
pub(crate) fn decode_f32_le(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
}

/// Selected rows of a source as an f64 matrix `(rows.len(), D)`, in the order given.
pub fn gather_rows(source: &dyn RowSource, rows: &[usize]) -> Result<Matrix> {
    let d = source.dim();
    let mut data = Vec::with_capacity(rows.len() * d);
    let mut buf = Vec::new();
    for &r in rows {
        source.read_rows(r, r + 1, &mut buf)?;
        data.extend(buf.iter().map(|&v| f64::from(v)));
    }
    Matrix::new(rows.len(), d, data)
}

/// Writes `(rows, cols)` float32 embeddings as `.safetensors` with the tensor [`SAFETENSORS_KEY`], atomically.
pub fn write_safetensors(path: &Path, data: &[f32], rows: usize, cols: usize) -> Result<()> {
    if rows.checked_mul(cols) != Some(data.len()) {
        return Err(ProbeError::Shape(format!(
            "{} values for a {rows}x{cols} matrix",
            data.len()
        )));
    }
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(Dtype::F32, vec![rows, cols], &bytes)
        .map_err(|e| ProbeError::format(path, format!("safetensors: {e}")))?;
    let buf = safetensors::serialize([(SAFETENSORS_KEY, view)], None)
        .map_err(|e| ProbeError::format(path, format!("safetensors: {e}")))?;
    write_atomic(path, |w| w.write_all(&buf))
}

/// A memory-mapped `.safetensors` embeddings file (tensor [`SAFETENSORS_KEY`], F32, 2-d).
pub struct SafetensorsMmap {
    path: PathBuf,
    mmap: Mmap,
    offset: usize,
    rows: usize,
    cols: usize,
}

impl SafetensorsMmap {
    /// Maps `path` and locates the `embeddings` tensor.
    pub fn open(path: &Path) -> Result<SafetensorsMmap> {
        let file = File::open(path).map_err(|e| ProbeError::io(path, e))?;
        // SAFETY: read-only map; our writers replace files by rename and never truncate them in place.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| ProbeError::io(path, e))?;
        let (n, meta) = SafeTensors::read_metadata(&mmap)
            .map_err(|e| ProbeError::format(path, format!("safetensors: {e}")))?;
        let info = meta.info(SAFETENSORS_KEY).ok_or_else(|| {
            ProbeError::format(path, format!("no tensor named {SAFETENSORS_KEY:?}"))
        })?;
        if info.dtype != Dtype::F32 || info.shape.len() != 2 {
            return Err(ProbeError::format(
                path,
                format!(
                    "expected a 2-d F32 tensor, got {:?} of shape {:?}",
                    info.dtype, info.shape
                ),
            ));
        }
        let (rows, cols) = (info.shape[0], info.shape[1]);
        Ok(SafetensorsMmap {
            path: path.to_path_buf(),
            offset: 8 + n + info.data_offsets.0,
            mmap,
            rows,
            cols,
        })
    }
}

impl RowSource for SafetensorsMmap {
    fn n_rows(&self) -> usize {
        self.rows
    }

    fn dim(&self) -> usize {
        self.cols
    }

    fn read_rows(&self, start: usize, end: usize, out: &mut Vec<f32>) -> Result<()> {
        if start > end || end > self.rows {
            return Err(ProbeError::Invalid(format!(
                "{}: rows {start}..{end} out of 0..{}",
                self.path.display(),
                self.rows
            )));
        }
        let a = self.offset + start * self.cols * 4;
        let b = self.offset + end * self.cols * 4;
        out.clear();
        out.extend(decode_f32_le(&self.mmap[a..b]));
        Ok(())
    }
}

/// Reads a whole `.safetensors` embeddings file into memory.
pub fn read_safetensors(path: &Path) -> Result<Embeddings> {
    let m = SafetensorsMmap::open(path)?;
    let mut data = Vec::new();
    m.read_rows(0, m.rows, &mut data)?;
    Ok(Embeddings {
        rows: m.rows,
        cols: m.cols,
        data,
    })
}

/// Opens an embeddings file memory-mapped, by extension: `.npy` or `.safetensors`.
pub fn open_embeddings(path: &Path) -> Result<Box<dyn RowSource>> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("npy") => Ok(Box::new(NpyMmap::open(path)?)),
        Some("safetensors") => Ok(Box::new(SafetensorsMmap::open(path)?)),
        _ => Err(ProbeError::format(
            path,
            "expected a .npy or .safetensors embeddings file",
        )),
    }
}

/// Writes embeddings by extension (`.npy` or `.safetensors`), atomically.
pub fn write_embeddings(path: &Path, emb: &Embeddings) -> Result<()> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("npy") => write_npy(path, &emb.data, emb.rows, emb.cols),
        Some("safetensors") => write_safetensors(path, &emb.data, emb.rows, emb.cols),
        _ => Err(ProbeError::format(
            path,
            "expected a .npy or .safetensors embeddings file",
        )),
    }
}

/// Reads a whole embeddings file by extension.
pub fn read_embeddings(path: &Path) -> Result<Embeddings> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("npy") => read_npy(path),
        Some("safetensors") => read_safetensors(path),
        _ => Err(ProbeError::format(
            path,
            "expected a .npy or .safetensors embeddings file",
        )),
    }
}

/// The rows' names, in row order: image paths, or (video, frame) pairs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EmbeddingIndex {
    /// Header `path`: one image path (or sample key) per row.
    Paths(Vec<String>),
    /// Header `video,frame`: one video path and 0-based frame number per row.
    Frames(Vec<(String, u64)>),
}

impl EmbeddingIndex {
    /// Number of rows.
    pub fn len(&self) -> usize {
        match self {
            EmbeddingIndex::Paths(p) => p.len(),
            EmbeddingIndex::Frames(f) => f.len(),
        }
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The key of row `i`: the path, or `video#frame`.
    pub fn key(&self, i: usize) -> Option<String> {
        match self {
            EmbeddingIndex::Paths(p) => p.get(i).cloned(),
            EmbeddingIndex::Frames(f) => f.get(i).map(|(v, n)| format!("{v}#{n}")),
        }
    }

    /// The row of each key, in the order given; the error names the first key not in the index.
    pub fn rows_for<S: AsRef<str>>(&self, keys: &[S]) -> Result<Vec<usize>> {
        let map: HashMap<String, usize> = (0..self.len())
            .filter_map(|i| self.key(i).map(|k| (k, i)))
            .collect();
        keys.iter()
            .map(|k| {
                map.get(k.as_ref()).copied().ok_or_else(|| {
                    ProbeError::Invalid(format!("{:?} is not in the embeddings index", k.as_ref()))
                })
            })
            .collect()
    }

    /// Writes `index.csv` atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        write_atomic(path, |w| {
            match self {
                EmbeddingIndex::Paths(p) => {
                    writeln!(w, "path")?;
                    for s in p {
                        writeln!(w, "{}", quote(s))?;
                    }
                }
                EmbeddingIndex::Frames(f) => {
                    writeln!(w, "video,frame")?;
                    for (v, n) in f {
                        writeln!(w, "{},{n}", quote(v))?;
                    }
                }
            }
            Ok(())
        })
    }

    /// Reads an `index.csv`.
    pub fn read(path: &Path) -> Result<EmbeddingIndex> {
        let text = read_text(path)?;
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
        let header = lines
            .next()
            .map(|(_, h)| h.trim_end_matches('\r'))
            .unwrap_or("");
        match header {
            "path" => {
                let mut out = Vec::new();
                for (ln, line) in lines {
                    let f = split_line(line).map_err(|m| ProbeError::parse(path, ln, m))?;
                    if f.len() != 1 || f[0].is_empty() {
                        return Err(ProbeError::parse(path, ln, "expected one non-empty path"));
                    }
                    out.extend(f);
                }
                Ok(EmbeddingIndex::Paths(out))
            }
            "video,frame" => {
                let mut out = Vec::new();
                for (ln, line) in lines {
                    let f = split_line(line).map_err(|m| ProbeError::parse(path, ln, m))?;
                    if f.len() != 2 {
                        return Err(ProbeError::parse(
                            path,
                            ln,
                            format!("expected video,frame, got {} fields", f.len()),
                        ));
                    }
                    let n = f[1].trim().parse::<u64>().map_err(|_| {
                        ProbeError::parse(path, ln, format!("frame {:?} is not a number", f[1]))
                    })?;
                    out.push((f[0].clone(), n));
                }
                Ok(EmbeddingIndex::Frames(out))
            }
            h => Err(ProbeError::parse(
                path,
                1,
                format!("expected the header `path` or `video,frame`, got {h:?}"),
            )),
        }
    }
}

/// Opens an embeddings file and its index and checks that they have the same number of rows.
pub fn open_with_index(
    embeddings: &Path,
    index: &Path,
) -> Result<(Box<dyn RowSource>, EmbeddingIndex)> {
    let src = open_embeddings(embeddings)?;
    let idx = EmbeddingIndex::read(index)?;
    if idx.len() != src.n_rows() {
        return Err(ProbeError::Shape(format!(
            "{} has {} rows but {} lists {}",
            embeddings.display(),
            src.n_rows(),
            index.display(),
            idx.len()
        )));
    }
    Ok((src, idx))
}
