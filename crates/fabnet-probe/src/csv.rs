//! A minimal RFC 4180 CSV line splitter and field quoter (one record per line; quoted fields may hold
//! commas and doubled quotes, not newlines). Enough for our index and annotation files without a dependency.

/// Splits one CSV line into fields; `Err` carries a lowercase reason (an unterminated or stray quote).
pub fn split_line(line: &str) -> Result<Vec<String>, String> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    cur.push('"');
                    chars.next();
                } else {
                    quoted = false;
                    match chars.peek() {
                        None | Some(',') => {}
                        Some(_) => return Err("text after a closing quote".into()),
                    }
                }
            } else {
                cur.push(c);
            }
        } else if c == ',' {
            fields.push(std::mem::take(&mut cur));
            at_start = true;
            continue;
        } else if c == '"' && at_start {
            quoted = true;
        } else if c == '"' {
            return Err("quote inside an unquoted field".into());
        } else {
            cur.push(c);
        }
        at_start = false;
    }
    if quoted {
        return Err("unterminated quoted field".into());
    }
    fields.push(cur);
    Ok(fields)
}

/// Quotes a field if it holds a comma, quote or line break.
pub fn quote(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_and_quote_round_trip() {
        assert_eq!(split_line("a,b,,c").unwrap(), vec!["a", "b", "", "c"]);
        assert_eq!(
            split_line("\"x,y\",\"he said \"\"hi\"\"\"\r").unwrap(),
            vec!["x,y", "he said \"hi\""]
        );
        assert!(split_line("\"open").is_err());
        assert!(split_line("a\"b").is_err());
        assert!(split_line("\"a\"b").is_err());
        for f in ["plain", "with,comma", "q\"uote"] {
            assert_eq!(split_line(&quote(f)).unwrap(), vec![f]);
        }
    }
}
