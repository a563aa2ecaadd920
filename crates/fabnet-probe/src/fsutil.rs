//! Small file helpers shared by the readers and writers: atomic writes and tolerant text decoding.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{ProbeError, Result};

/// Writes a file atomically: the bytes go to a temporary file beside `path`, which is then renamed,
/// so a reader never sees a half-written file.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().ok_or_else(|| {
        ProbeError::Invalid(format!("output path {} has no file name", path.display()))
    })?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let file = std::fs::File::create(&tmp)?;
        let mut buf = std::io::BufWriter::new(file);
        write(&mut buf)?;
        let file = buf.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(ProbeError::io(path, e));
    }
    Ok(())
}

/// Reads a text file; bytes that are not UTF-8 are decoded as ISO-8859-1 (dlib's XML files declare it).
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| ProbeError::io(path, e))?;
    Ok(match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => e.into_bytes().iter().map(|&b| b as char).collect(),
    })
}
