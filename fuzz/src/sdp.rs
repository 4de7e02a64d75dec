//! The mids and rids of an SDP, so that a structured input can name "the n-th m-line" of
//! whatever SDP the fuzzer made. A lookup for aiming, not the parser under test: the
//! targets hand the SDP itself to the project's parsers.

/// The values of its `a=mid:` lines, in order.
pub fn mids(sdp: &str) -> Vec<&str> {
    sdp.lines()
        .filter_map(|l| l.trim_end().strip_prefix("a=mid:"))
        .collect()
}

/// The ids of its `a=rid:` lines, in order.
pub fn rids(sdp: &str) -> Vec<&str> {
    sdp.lines()
        .filter_map(|l| l.strip_prefix("a=rid:"))
        .filter_map(|r| r.split(' ').next())
        .collect()
}

/// The `n`-th of `names` (wrapping), or `n` itself as a name when there are none.
pub fn nth(names: &[&str], n: u8) -> String {
    match names.len() {
        0 => n.to_string(),
        len => names[usize::from(n) % len].to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_mids_and_rids_in_order() {
        let sdp = "v=0\r\nm=audio 9 X 111\r\na=mid:0\r\nm=video 9 X 96\r\na=mid:v\r\n\
                   a=rid:q send\r\na=rid:h send\r\n";
        assert_eq!(mids(sdp), ["0", "v"]);
        assert_eq!(rids(sdp), ["q", "h"]);
        assert_eq!(nth(&mids(sdp), 3), "v");
        assert_eq!(nth(&[], 3), "3");
    }
}
