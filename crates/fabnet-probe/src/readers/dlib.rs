//! dlib imglab XML (`<images><image file=..><box top left width height><part name="00" x y/>…`), as in
//! dlib's `training_with_face_landmarks.xml`. A small tag scanner, not a general XML parser: it reads
//! elements, attributes (single or double quotes, the five predefined entities), comments and
//! processing instructions, and tracks line numbers for errors.

use std::path::Path;

use super::{base_dir, parse_f64, LandmarkSample};
use crate::error::{ProbeError, Result};
use crate::fsutil::read_text;
use crate::geometry::CropBox;

struct Tag {
    name: String,
    attrs: Vec<(String, String)>,
    closing: bool,
    self_closing: bool,
    line: usize,
}

impl Tag {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn num(&self, path: &Path, key: &str) -> Result<f64> {
        let v = self.attr(key).ok_or_else(|| {
            ProbeError::parse(
                path,
                self.line,
                format!("<{}> lacks the attribute {key}", self.name),
            )
        })?;
        parse_f64(path, self.line, v, key)
    }
}

fn decode_entities(path: &Path, line: usize, s: &str) -> Result<String> {
    if !s.contains('&') {
        return Ok(s.to_string());
    }
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let end = rest[i..]
            .find(';')
            .ok_or_else(|| ProbeError::parse(path, line, "unterminated entity"))?;
        let ent = &rest[i + 1..i + end];
        out.push(match ent {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                return Err(ProbeError::parse(
                    path,
                    line,
                    format!("unknown entity &{ent};"),
                ))
            }
        });
        rest = &rest[i + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Splits the document into tags, skipping text, comments, declarations and processing instructions.
fn scan(path: &Path, text: &str) -> Result<Vec<Tag>> {
    let mut tags = Vec::new();
    let mut pos = 0;
    let line_at = |p: usize| text[..p].bytes().filter(|&b| b == b'\n').count() + 1;
    while let Some(off) = text[pos..].find('<') {
        let start = pos + off;
        let rest = &text[start..];
        let (terminator, skip) = if rest.starts_with("<!--") {
            ("-->", true)
        } else if rest.starts_with("<?") {
            ("?>", true)
        } else if rest.starts_with("<!") {
            (">", true)
        } else {
            (">", false)
        };
        let end = match rest.find(terminator) {
            Some(e) => start + e + terminator.len(),
            None => return Err(ProbeError::parse(path, line_at(start), "unterminated tag")),
        };
        pos = end;
        if skip {
            continue;
        }
        let line = line_at(start);
        let mut body = &text[start + 1..end - 1];
        let closing = body.starts_with('/');
        if closing {
            body = &body[1..];
        }
        let self_closing = body.ends_with('/');
        if self_closing {
            body = &body[..body.len() - 1];
        }
        let name_end = body.find(|c: char| c.is_whitespace()).unwrap_or(body.len());
        let name = body[..name_end].to_string();
        if name.is_empty() {
            return Err(ProbeError::parse(path, line, "tag without a name"));
        }
        let mut attrs = Vec::new();
        let mut rest = body[name_end..].trim_start();
        while !rest.is_empty() {
            let eq = rest.find('=').ok_or_else(|| {
                ProbeError::parse(path, line, format!("malformed attributes in <{name}>"))
            })?;
            let key = rest[..eq].trim().to_string();
            let after = rest[eq + 1..].trim_start();
            let quote = after
                .chars()
                .next()
                .filter(|c| *c == '\'' || *c == '"')
                .ok_or_else(|| {
                    ProbeError::parse(path, line, format!("unquoted value for {key} in <{name}>"))
                })?;
            let close = after[1..].find(quote).ok_or_else(|| {
                ProbeError::parse(
                    path,
                    line,
                    format!("unterminated value for {key} in <{name}>"),
                )
            })?;
            attrs.push((key, decode_entities(path, line, &after[1..1 + close])?));
            rest = after[close + 2..].trim_start();
        }
        tags.push(Tag {
            name,
            attrs,
            closing,
            self_closing,
            line,
        });
    }
    Ok(tags)
}

struct OpenBox {
    bbox: CropBox,
    ignore: bool,
    parts: Vec<(usize, [f64; 2])>,
    line: usize,
    file: String,
    index: usize,
}

/// Reads a dlib imglab XML file: one [`LandmarkSample`] per `<box>` with parts (boxes marked
/// `ignore='1'` or without parts are skipped), in file order. Image paths are relative to the XML file's
/// folder; keys are `file#k` with k the box's 0-based position in its `<image>`. Parts are ordered by
/// their numeric names, which must run 0..n without gaps; coordinates are 0-based pixels.
pub fn read_dlib_xml(path: &Path) -> Result<Vec<LandmarkSample>> {
    let text = read_text(path)?;
    let base = base_dir(path);
    let mut out = Vec::new();
    let mut image: Option<(String, usize)> = None;
    let mut open: Option<OpenBox> = None;
    for tag in scan(path, &text)? {
        match (tag.name.as_str(), tag.closing) {
            ("image", false) => {
                if image.is_some() {
                    return Err(ProbeError::parse(
                        path,
                        tag.line,
                        "<image> inside another <image>",
                    ));
                }
                let file = tag.attr("file").ok_or_else(|| {
                    ProbeError::parse(path, tag.line, "<image> lacks the attribute file")
                })?;
                if !tag.self_closing {
                    image = Some((file.to_string(), 0));
                }
            }
            ("image", true) => {
                if open.is_some() {
                    return Err(ProbeError::parse(path, tag.line, "</image> before </box>"));
                }
                if image.take().is_none() {
                    return Err(ProbeError::parse(
                        path,
                        tag.line,
                        "</image> without <image>",
                    ));
                }
            }
            ("box", false) => {
                let Some((file, count)) = image.as_mut() else {
                    return Err(ProbeError::parse(
                        path,
                        tag.line,
                        "<box> outside an <image>",
                    ));
                };
                if open.is_some() {
                    return Err(ProbeError::parse(
                        path,
                        tag.line,
                        "<box> inside another <box>",
                    ));
                }
                let bbox = CropBox::from_pixel_rect(
                    tag.num(path, "left")?,
                    tag.num(path, "top")?,
                    tag.num(path, "width")?,
                    tag.num(path, "height")?,
                );
                let index = *count;
                *count += 1;
                let b = OpenBox {
                    bbox,
                    ignore: tag.attr("ignore").is_some_and(|v| v != "0"),
                    parts: Vec::new(),
                    line: tag.line,
                    file: file.clone(),
                    index,
                };
                if tag.self_closing {
                    tracing::debug!("{}:{}: box without parts skipped", path.display(), tag.line);
                } else {
                    open = Some(b);
                }
            }
            ("box", true) => {
                let b = open
                    .take()
                    .ok_or_else(|| ProbeError::parse(path, tag.line, "</box> without <box>"))?;
                if b.ignore || b.parts.is_empty() {
                    continue;
                }
                let mut parts = b.parts;
                parts.sort_by_key(|(i, _)| *i);
                if parts.iter().enumerate().any(|(k, (i, _))| k != *i) {
                    return Err(ProbeError::parse(
                        path,
                        b.line,
                        format!(
                            "part names must run 0..{} without gaps or repeats",
                            parts.len()
                        ),
                    ));
                }
                out.push(LandmarkSample {
                    key: format!("{}#{}", b.file, b.index),
                    image: base.join(&b.file),
                    points: parts.into_iter().map(|(_, p)| p).collect(),
                    given_box: Some(b.bbox),
                });
            }
            ("part", false) => {
                let b = open
                    .as_mut()
                    .ok_or_else(|| ProbeError::parse(path, tag.line, "<part> outside a <box>"))?;
                let name = tag.attr("name").ok_or_else(|| {
                    ProbeError::parse(path, tag.line, "<part> lacks the attribute name")
                })?;
                let idx = name.trim().parse::<usize>().map_err(|_| {
                    ProbeError::parse(
                        path,
                        tag.line,
                        format!("part name {name:?} is not a number"),
                    )
                })?;
                b.parts
                    .push((idx, [tag.num(path, "x")?, tag.num(path, "y")?]));
            }
            _ => {}
        }
    }
    if let Some(b) = open {
        return Err(ProbeError::parse(path, b.line, "<box> is never closed"));
    }
    if image.is_some() {
        return Err(ProbeError::parse(
            path,
            text.lines().count().max(1),
            "<image> is never closed",
        ));
    }
    Ok(out)
}
