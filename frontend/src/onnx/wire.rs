//! A check of the protobuf wire format that `protobuf` 3.4 leaves out: it bounds every nested
//! length by its parent's but not the outermost fields by the end of the input, so a truncated
//! file parsed "successfully" as a shorter model (a cut graph, half a node). Walking the top-level
//! fields once closes that: every deeper length is then bounded by an intact parent.

/// Check that every top-level field of the message in `bytes` ends inside `bytes`.
pub fn check_top_level(bytes: &[u8]) -> Result<(), String> {
    let mut at = 0usize;
    while at < bytes.len() {
        let field_at = at;
        let tag = varint(bytes, &mut at).ok_or_else(|| format!("truncated field tag at byte {field_at}"))?;
        let end = match tag & 7 {
            0 => varint(bytes, &mut at).map(|_| at),
            1 => at.checked_add(8),
            2 => varint(bytes, &mut at).and_then(|len| usize::try_from(len).ok()).and_then(|len| at.checked_add(len)),
            5 => at.checked_add(4),
            w => return Err(format!("field {} at byte {field_at} has invalid wire type {w}", tag >> 3)),
        };
        match end {
            Some(end) if end <= bytes.len() => at = end,
            _ => {
                return Err(format!(
                    "field {} at byte {field_at} runs past the end of the {} bytes (truncated file?)",
                    tag >> 3,
                    bytes.len()
                ))
            }
        }
    }
    Ok(())
}

fn varint(b: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at)?;
        *at += 1;
        v |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_and_overlong_fields_are_found() {
        // field 1 varint 8; field 7 length 3 "abc"
        let ok = [0x08, 0x08, 0x3a, 0x03, b'a', b'b', b'c'];
        assert_eq!(check_top_level(&ok), Ok(()));
        for cut in 3..ok.len() {
            assert!(check_top_level(&ok[..cut]).unwrap_err().contains("runs past the end"), "cut {cut}");
        }
        assert!(check_top_level(&[0x08]).is_err());
        assert!(check_top_level(&[0x0f, 0x00]).unwrap_err().contains("invalid wire type 7"));
    }
}
