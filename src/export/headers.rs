//! What an export says in response headers: `Content-Disposition` for the file and
//! `X-Spark-Warnings`, made safe (visible ASCII only) and bounded in size.

/// A value safe for an HTTP header: visible ASCII kept, everything else percent-encoded.
pub fn header_safe(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..0x7F).contains(&b) && b != b'%' && b != b'"' && b != b'\\' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Most warnings named in `X-Spark-Warnings`, and most bytes of the header: a response header
/// must stay small whatever the export holds (a bundle of a thousand scripts once made it 925 KB).
pub const MAX_HEADER_WARNINGS: usize = 10;
pub const MAX_HEADER_WARNING_BYTES: usize = 4096;

/// The `X-Spark-Warnings` value: header-safe warnings joined by `; `, at most
/// [`MAX_HEADER_WARNINGS`] of them and [`MAX_HEADER_WARNING_BYTES`] in all, ending with
/// `; +N more` when some were left out.
pub fn warnings_header(warnings: &[String]) -> String {
    let mut out = String::new();
    let mut shown = 0;
    for w in warnings.iter().take(MAX_HEADER_WARNINGS) {
        let w = header_safe(w);
        let sep = if out.is_empty() { 0 } else { 2 };
        // Room is kept for the "; +N more" tail.
        if out.len() + sep + w.len() > MAX_HEADER_WARNING_BYTES - 32 {
            break;
        }
        if sep > 0 {
            out.push_str("; ");
        }
        out.push_str(&w);
        shown += 1;
    }
    if shown < warnings.len() {
        if !out.is_empty() {
            out.push_str("; ");
        }
        out.push_str(&format!("+{} more", warnings.len() - shown));
    }
    out
}

/// `Content-Disposition: attachment` for a validated file name (RFC 6266): a quoted ASCII
/// `filename`, plus `filename*` (RFC 5987, UTF-8, percent-encoded) when the name is not ASCII.
pub fn content_disposition(file_name: &str) -> String {
    if file_name.is_ascii() {
        return format!("attachment; filename=\"{}\"", header_safe(file_name));
    }
    let fallback: String = file_name
        .chars()
        .map(|c| if c.is_ascii() { c } else { '_' })
        .collect();
    let mut encoded = String::new();
    for b in file_name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!(
        "attachment; filename=\"{}\"; filename*=UTF-8''{encoded}",
        header_safe(&fallback)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_warnings_header_is_bounded_in_count_and_bytes() {
        let many: Vec<String> = (0..1000).map(|i| format!("warning {i}")).collect();
        let h = warnings_header(&many);
        assert!(h.starts_with("warning 0; warning 1"));
        assert!(h.ends_with("; +990 more"), "{h}");
        let long: Vec<String> = (0..5).map(|_| "é".repeat(2000)).collect();
        let h = warnings_header(&long);
        assert!(h.len() <= MAX_HEADER_WARNING_BYTES, "{}", h.len());
        assert!(h.ends_with("more"), "{h}");
        assert_eq!(warnings_header(&["a".into(), "b".into()]), "a; b");
    }

    #[test]
    fn dispositions_quote_ascii_and_add_filename_star_for_unicode() {
        assert_eq!(
            content_disposition("PlayerController.cs"),
            "attachment; filename=\"PlayerController.cs\""
        );
        assert_eq!(
            content_disposition("Spieler_Übung.cs"),
            "attachment; filename=\"Spieler__bung.cs\"; filename*=UTF-8''Spieler_%C3%9Cbung.cs"
        );
        assert_eq!(header_safe("a\r\nb\"c"), "a%0D%0Ab%22c");
    }
}
