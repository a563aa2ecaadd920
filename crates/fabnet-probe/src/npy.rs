//! NumPy `.npy` files of float32 `(N, D)` matrices: little-endian `'<f4'`, C order, format versions
//! 1.0–3.0 on reading, 1.0 on writing. Whole-file reads, memory-mapped reads of row ranges, and a
//! streaming writer for outputs whose row count is not known up front.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::embeddings::{decode_f32_le, Embeddings, RowSource};
use crate::error::{ProbeError, Result};
use crate::fsutil::write_atomic;

const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// The streaming writer's fixed header size: room for any `(N, D)` shape, a multiple of 64 as NumPy asks.
const STREAM_HEADER_LEN: usize = 128;

/// The header of a `.npy` file holding a float32 matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NpyHeader {
    /// Rows N.
    pub rows: usize,
    /// Columns D.
    pub cols: usize,
    /// Byte offset of the data.
    pub data_offset: usize,
}

/// The header bytes (magic through the newline) for a `(rows, cols)` float32 matrix, padded with spaces
/// to `total_len` bytes if given, else to the next multiple of 64.
fn header_bytes(rows: usize, cols: usize, total_len: Option<usize>) -> Vec<u8> {
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    let unpadded = MAGIC.len() + 2 + 2 + dict.len() + 1;
    let total = total_len.unwrap_or(unpadded.div_ceil(64) * 64);
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&((total - 10) as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.resize(total - 1, b' ');
    out.push(b'\n');
    out
}

/// Parses a `.npy` header from the start of `bytes` (which may be just the first few KiB of the file).
pub fn parse_header(path: &Path, bytes: &[u8]) -> Result<NpyHeader> {
    let bad = |m: &str| ProbeError::format(path, m);
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(bad("not a .npy file (bad magic)"));
    }
    let (len, start) = match bytes[6] {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(bad("truncated .npy header"));
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => {
            return Err(ProbeError::format(
                path,
                format!("unsupported .npy version {v}"),
            ))
        }
    };
    let dict = bytes
        .get(start..start + len)
        .ok_or_else(|| bad("truncated .npy header"))?;
    let dict = std::str::from_utf8(dict).map_err(|_| bad(".npy header is not text"))?;
    let value_of = |key: &str| -> Result<&str> {
        let k = dict
            .find(&format!("'{key}'"))
            .ok_or_else(|| ProbeError::format(path, format!(".npy header lacks {key}")))?;
        let rest = &dict[k + key.len() + 2..];
        let colon = rest
            .find(':')
            .ok_or_else(|| ProbeError::format(path, format!(".npy header: no value for {key}")))?;
        Ok(rest[colon + 1..].trim_start())
    };
    let descr = value_of("descr")?;
    if !(descr.starts_with("'<f4'") || descr.starts_with("\"<f4\"")) {
        let shown: String = descr.chars().take(8).collect();
        return Err(ProbeError::format(
            path,
            format!("expected dtype '<f4', got {shown}"),
        ));
    }
    if !value_of("fortran_order")?.starts_with("False") {
        return Err(bad(
            "fortran-order arrays are not supported, expected C order",
        ));
    }
    let shape = value_of("shape")?;
    let close = shape
        .find(')')
        .ok_or_else(|| bad(".npy header: malformed shape"))?;
    let dims = shape[..close]
        .trim_start_matches('(')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| ProbeError::format(path, format!("bad dimension {s:?} in shape")))
        })
        .collect::<Result<Vec<_>>>()?;
    if dims.len() != 2 {
        return Err(ProbeError::format(
            path,
            format!("expected a 2-d (N, D) array, got shape {dims:?}"),
        ));
    }
    Ok(NpyHeader {
        rows: dims[0],
        cols: dims[1],
        data_offset: start + len,
    })
}

/// Writes `data` `(rows, cols)` row-major as a `.npy` file, atomically.
pub fn write_npy(path: &Path, data: &[f32], rows: usize, cols: usize) -> Result<()> {
    if rows.checked_mul(cols) != Some(data.len()) {
        return Err(ProbeError::Shape(format!(
            "{} values for a {rows}x{cols} matrix",
            data.len()
        )));
    }
    write_atomic(path, |w| {
        w.write_all(&header_bytes(rows, cols, None))?;
        for chunk in data.chunks(1 << 16) {
            let bytes: Vec<u8> = chunk.iter().flat_map(|v| v.to_le_bytes()).collect();
            w.write_all(&bytes)?;
        }
        Ok(())
    })
}

/// Reads a whole `.npy` float32 matrix into memory.
pub fn read_npy(path: &Path) -> Result<Embeddings> {
    let bytes = std::fs::read(path).map_err(|e| ProbeError::io(path, e))?;
    let h = parse_header(path, &bytes)?;
    let need = h.rows * h.cols * 4;
    let body = &bytes[h.data_offset..];
    if body.len() != need {
        return Err(ProbeError::format(
            path,
            format!(
                "shape ({}, {}) needs {need} data bytes, file has {}",
                h.rows,
                h.cols,
                body.len()
            ),
        ));
    }
    Ok(Embeddings {
        rows: h.rows,
        cols: h.cols,
        data: decode_f32_le(body).collect(),
    })
}

/// A memory-mapped `.npy` float32 matrix: rows are decoded on demand, so a 1M × 256 file costs no
/// more memory than the rows being read.
pub struct NpyMmap {
    path: PathBuf,
    mmap: Mmap,
    header: NpyHeader,
}

impl NpyMmap {
    /// Maps `path` and checks its header and size.
    pub fn open(path: &Path) -> Result<NpyMmap> {
        let file = File::open(path).map_err(|e| ProbeError::io(path, e))?;
        // SAFETY: the map is read-only; as with any memory map, the file must not be truncated while
        // mapped, which our writers never do (they replace files by rename).
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| ProbeError::io(path, e))?;
        let header = parse_header(path, &mmap)?;
        let need = header.rows * header.cols * 4;
        if mmap.len() - header.data_offset != need {
            return Err(ProbeError::format(
                path,
                format!(
                    "shape ({}, {}) needs {need} data bytes, file has {}",
                    header.rows,
                    header.cols,
                    mmap.len() - header.data_offset
                ),
            ));
        }
        Ok(NpyMmap {
            path: path.to_path_buf(),
            mmap,
            header,
        })
    }

    /// The file's header.
    pub fn header(&self) -> NpyHeader {
        self.header
    }
}

impl RowSource for NpyMmap {
    fn n_rows(&self) -> usize {
        self.header.rows
    }

    fn dim(&self) -> usize {
        self.header.cols
    }

    fn read_rows(&self, start: usize, end: usize, out: &mut Vec<f32>) -> Result<()> {
        if start > end || end > self.header.rows {
            return Err(ProbeError::Invalid(format!(
                "{}: rows {start}..{end} out of 0..{}",
                self.path.display(),
                self.header.rows
            )));
        }
        let row_bytes = self.header.cols * 4;
        let a = self.header.data_offset + start * row_bytes;
        let b = self.header.data_offset + end * row_bytes;
        out.clear();
        out.extend(decode_f32_le(&self.mmap[a..b]));
        Ok(())
    }
}

/// Writes a `.npy` float32 matrix row batch by row batch when N is not known in advance; the file
/// appears at its path only on [`NpyWriter::finish`] (temp file + rename); dropping an unfinished
/// writer removes the temp file.
pub struct NpyWriter {
    path: PathBuf,
    tmp: PathBuf,
    file: Option<std::io::BufWriter<File>>,
    cols: usize,
    rows: usize,
}

impl NpyWriter {
    /// Starts a `(?, cols)` matrix at `path`.
    pub fn create(path: &Path, cols: usize) -> Result<NpyWriter> {
        let tmp = path.with_file_name(format!(
            ".{}.tmp{}",
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            std::process::id()
        ));
        let mut file =
            std::io::BufWriter::new(File::create(&tmp).map_err(|e| ProbeError::io(&tmp, e))?);
        file.write_all(&header_bytes(0, cols, Some(STREAM_HEADER_LEN)))
            .map_err(|e| ProbeError::io(&tmp, e))?;
        Ok(NpyWriter {
            path: path.to_path_buf(),
            tmp,
            file: Some(file),
            cols,
            rows: 0,
        })
    }

    /// Appends rows given row-major; the length must be a multiple of `cols`.
    pub fn write_rows(&mut self, data: &[f32]) -> Result<()> {
        if self.cols == 0 || data.len() % self.cols != 0 {
            return Err(ProbeError::Shape(format!(
                "{} values are not whole rows of {}",
                data.len(),
                self.cols
            )));
        }
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| ProbeError::Invalid("npy writer already finished".into()))?;
        file.write_all(&bytes)
            .map_err(|e| ProbeError::io(&self.tmp, e))?;
        self.rows += data.len() / self.cols;
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Writes the final shape into the header and moves the file into place; returns N.
    pub fn finish(mut self) -> Result<usize> {
        let tmp = self.tmp.clone();
        let io = |e| ProbeError::io(&tmp, e);
        let buf = self
            .file
            .take()
            .ok_or_else(|| ProbeError::Invalid("npy writer already finished".into()))?;
        let mut file = buf.into_inner().map_err(|e| io(e.into_error()))?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(&header_bytes(self.rows, self.cols, Some(STREAM_HEADER_LEN)))
            .map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&self.tmp, &self.path).map_err(|e| ProbeError::io(&self.path, e))?;
        Ok(self.rows)
    }
}

impl Drop for NpyWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
