//! gRPC outcomes: which requests are gRPC, and the status code a gRPC call ended
//! with. A gRPC call answers `:status 200` also when it fails; its outcome is the
//! `grpc-status` header, sent in the response headers when the answer is
//! trailers-only and in the trailers otherwise. Pure: the host layer reads the
//! header values, this module decides what they mean.
//!
//! References: gRPC over HTTP/2 (`doc/PROTOCOL-HTTP2.md`), the status codes
//! (`doc/statuscodes.md`) and the HTTP to gRPC status mapping
//! (`doc/http-grpc-status-mapping.md`) of grpc/grpc.

/// The canonical status code names, indexed by their number (0 to 16).
pub const CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// A gRPC status code, 0 (`OK`) to 16 (`UNAUTHENTICATED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GrpcCode(u8);

impl GrpcCode {
    pub const OK: GrpcCode = GrpcCode(0);
    pub const UNKNOWN: GrpcCode = GrpcCode(2);
    pub const INTERNAL: GrpcCode = GrpcCode(13);
    pub const UNAVAILABLE: GrpcCode = GrpcCode(14);
    pub const UNIMPLEMENTED: GrpcCode = GrpcCode(12);
    pub const PERMISSION_DENIED: GrpcCode = GrpcCode(7);
    pub const UNAUTHENTICATED: GrpcCode = GrpcCode(16);

    /// Every code, in number order.
    #[inline]
    pub fn all() -> impl Iterator<Item = GrpcCode> {
        (0..CODE_NAMES.len() as u8).map(GrpcCode)
    }

    /// The code of this number, if it is one of the 17.
    #[inline]
    pub fn from_number(n: u32) -> Option<GrpcCode> {
        u8::try_from(n)
            .ok()
            .filter(|&n| usize::from(n) < CODE_NAMES.len())
            .map(GrpcCode)
    }

    /// The code of a canonical name (`UNAVAILABLE`); exact, upper case.
    #[inline]
    pub fn from_name(name: &str) -> Option<GrpcCode> {
        CODE_NAMES
            .iter()
            .position(|&n| n == name)
            .map(|i| GrpcCode(i as u8))
    }

    #[inline]
    pub fn number(self) -> u8 {
        self.0
    }

    /// Position in [`CODE_NAMES`] and in per-code tables.
    #[inline]
    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    #[inline]
    pub fn name(self) -> &'static str {
        CODE_NAMES.get(self.index()).copied().unwrap_or("UNKNOWN")
    }
}

/// True if a request with this `content-type` is a gRPC call:
/// `application/grpc`, alone or followed by `+` (`application/grpc+proto`) or `;`
/// (parameters). Media types are case-insensitive (RFC 9110 8.3.1), so the type is
/// compared without regard to case. `application/grpc-web*` is not gRPC here: its
/// status travels in the response body, which this filter does not read.
#[inline]
pub fn is_grpc_content_type(value: &[u8]) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    match value.get(..GRPC.len()) {
        Some(prefix) if prefix.eq_ignore_ascii_case(GRPC) => {
            matches!(value.get(GRPC.len()), None | Some(b'+' | b';'))
        }
        _ => false,
    }
}

/// The code in a `grpc-status` value. A value that is not one of the 17 codes is
/// `UNKNOWN`, as a gRPC client reads it.
#[inline]
pub fn parse_grpc_status(value: &[u8]) -> GrpcCode {
    let digits = value.trim_ascii();
    if digits.is_empty() || digits.len() > 3 || !digits.iter().all(u8::is_ascii_digit) {
        return GrpcCode::UNKNOWN;
    }
    let n = digits
        .iter()
        .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
    GrpcCode::from_number(n).unwrap_or(GrpcCode::UNKNOWN)
}

/// The code a gRPC client gives a call whose answer has this HTTP status and no
/// `grpc-status` (the spec's HTTP to gRPC mapping). A 200 without a status is
/// `UNKNOWN`: the call ended without saying how.
#[inline]
pub fn code_for_http_status(status: u16) -> GrpcCode {
    match status {
        400 => GrpcCode::INTERNAL,
        401 => GrpcCode::UNAUTHENTICATED,
        403 => GrpcCode::PERMISSION_DENIED,
        404 => GrpcCode::UNIMPLEMENTED,
        429 | 502 | 503 | 504 => GrpcCode::UNAVAILABLE,
        _ => GrpcCode::UNKNOWN,
    }
}

/// The HTTP status in the bytes of `:status`, if it is three digits.
#[inline]
pub fn parse_http_status(value: &[u8]) -> Option<u16> {
    match value {
        [a @ b'1'..=b'9', b @ b'0'..=b'9', c @ b'0'..=b'9'] => {
            Some(u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0'))
        }
        _ => None,
    }
}

/// Whether the response headers can carry the call's `grpc-status`: a trailers-only
/// answer (the headers end the stream, as servers answer errors before any message
/// and Envoy its own replies) or a non-200 one. A 200 with more to come carries its
/// status in the trailers, so the host layer does not ask the headers for it: one
/// host call less on every normal call.
#[inline]
pub fn status_may_be_in_headers(http_status: Option<&[u8]>, end_of_stream: bool) -> bool {
    end_of_stream || http_status.and_then(parse_http_status) != Some(200)
}

/// The outcome of a gRPC call as far as its response headers tell:
/// `Some(code)` if they settle it, `None` if it comes in the trailers.
/// - `grpc-status` in the headers: a trailers-only answer, that is the code;
/// - an HTTP status other than 200 without `grpc-status`: the spec's mapping;
/// - 200 and the stream ended with the headers, without `grpc-status`: `UNKNOWN`;
/// - 200 and more to come: the trailers will say.
#[inline]
pub fn outcome_from_headers(
    grpc_status: Option<&[u8]>,
    http_status: Option<&[u8]>,
    end_of_stream: bool,
) -> Option<GrpcCode> {
    if let Some(value) = grpc_status {
        return Some(parse_grpc_status(value));
    }
    match http_status.and_then(parse_http_status) {
        Some(200) if !end_of_stream => None,
        Some(status) => Some(code_for_http_status(status)),
        None => Some(GrpcCode::UNKNOWN),
    }
}

/// The outcome from the trailers: their `grpc-status`, else `UNKNOWN`.
#[inline]
pub fn outcome_from_trailers(grpc_status: Option<&[u8]>) -> GrpcCode {
    grpc_status.map_or(GrpcCode::UNKNOWN, parse_grpc_status)
}

/// A set of gRPC codes, such as the ones that count as failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcCodeSet(u32);

/// The codes a guard counts as failures unless `guard.grpc_status` says otherwise:
/// the server or the network failed. The others (`NOT_FOUND`, `INVALID_ARGUMENT`,
/// `PERMISSION_DENIED`, ...) are answers to the caller, like a 4xx.
pub const DEFAULT_FAILURE_CODES: [&str; 5] = [
    "UNKNOWN",
    "DEADLINE_EXCEEDED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
];

impl Default for GrpcCodeSet {
    fn default() -> Self {
        GrpcCodeSet(
            DEFAULT_FAILURE_CODES
                .iter()
                .filter_map(|n| GrpcCode::from_name(n))
                .fold(0, |bits, c| bits | 1 << c.number()),
        )
    }
}

impl GrpcCodeSet {
    pub const EMPTY: GrpcCodeSet = GrpcCodeSet(0);

    /// Parses code names (`"UNAVAILABLE"`); on a bad entry returns its index and
    /// what is wrong with it.
    #[cold]
    #[inline(never)]
    pub fn parse(entries: &[String]) -> Result<GrpcCodeSet, (usize, String)> {
        let mut bits = 0u32;
        for (i, entry) in entries.iter().enumerate() {
            match GrpcCode::from_name(entry) {
                Some(code) => bits |= 1 << code.number(),
                None => {
                    let hint = match GrpcCode::from_name(&entry.trim().to_ascii_uppercase()) {
                        Some(code) => format!(" (did you mean `{}`?)", code.name()),
                        None => String::new(),
                    };
                    return Err((
                        i,
                        format!(
                            "`{}` is not a gRPC status code name (OK, CANCELLED, ... UNAUTHENTICATED){hint}",
                            crate::units::escape_text(entry, true)
                        ),
                    ));
                }
            }
        }
        Ok(GrpcCodeSet(bits))
    }

    #[inline]
    pub fn contains(self, code: GrpcCode) -> bool {
        self.0 & (1 << code.number()) != 0
    }

    /// The names in the set, in code order.
    #[cold]
    #[inline(never)]
    pub fn names(self) -> Vec<&'static str> {
        GrpcCode::all()
            .filter(|&c| self.contains(c))
            .map(GrpcCode::name)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_names_and_numbers_match_the_spec() {
        assert_eq!(GrpcCode::from_name("OK"), Some(GrpcCode::OK));
        assert_eq!(
            GrpcCode::from_name("UNAVAILABLE").map(GrpcCode::number),
            Some(14)
        );
        assert_eq!(
            GrpcCode::from_name("UNAUTHENTICATED").map(GrpcCode::number),
            Some(16)
        );
        assert_eq!(
            GrpcCode::from_name("DEADLINE_EXCEEDED").map(GrpcCode::number),
            Some(4)
        );
        assert_eq!(
            GrpcCode::from_name("NOT_FOUND").map(GrpcCode::number),
            Some(5)
        );
        assert_eq!(
            GrpcCode::from_name("DATA_LOSS").map(GrpcCode::number),
            Some(15)
        );
        assert_eq!(GrpcCode::from_name("unavailable"), None);
        assert_eq!(GrpcCode::from_number(17), None);
        assert_eq!(GrpcCode::all().count(), 17);
        for code in GrpcCode::all() {
            assert_eq!(GrpcCode::from_name(code.name()), Some(code));
            assert_eq!(GrpcCode::from_number(u32::from(code.number())), Some(code));
        }
    }

    #[test]
    fn grpc_is_recognised_by_its_content_type_and_grpc_web_is_not() {
        for yes in [
            &b"application/grpc"[..],
            b"application/grpc+proto",
            b"application/grpc+json",
            b"application/grpc;charset=utf-8",
            b"Application/GRPC",
            b"APPLICATION/GRPC+PROTO",
        ] {
            assert!(
                is_grpc_content_type(yes),
                "{}",
                String::from_utf8_lossy(yes)
            );
        }
        for no in [
            &b"application/grpc-web"[..],
            b"application/grpc-web+proto",
            b"application/grpc-web-text",
            b"application/grpcx",
            b"application/grp",
            b"application/json",
            b" application/grpc",
            b"",
            b"\xff\xfe",
        ] {
            assert!(!is_grpc_content_type(no), "{}", String::from_utf8_lossy(no));
        }
    }

    #[test]
    fn grpc_status_values_parse_and_strange_ones_are_unknown() {
        assert_eq!(parse_grpc_status(b"0"), GrpcCode::OK);
        assert_eq!(parse_grpc_status(b"14"), GrpcCode::UNAVAILABLE);
        assert_eq!(parse_grpc_status(b"16"), GrpcCode::UNAUTHENTICATED);
        assert_eq!(
            parse_grpc_status(b" 5 "),
            GrpcCode::from_name("NOT_FOUND").unwrap()
        );
        for bad in [
            &b"17"[..],
            b"99",
            b"-1",
            b"",
            b"abc",
            b"1.0",
            b"0014",
            b"\xff",
        ] {
            assert_eq!(parse_grpc_status(bad), GrpcCode::UNKNOWN, "{bad:?}");
        }
    }

    #[test]
    fn http_statuses_map_as_the_spec_says() {
        let name = |s| code_for_http_status(s).name();
        assert_eq!(name(400), "INTERNAL");
        assert_eq!(name(401), "UNAUTHENTICATED");
        assert_eq!(name(403), "PERMISSION_DENIED");
        assert_eq!(name(404), "UNIMPLEMENTED");
        for unavailable in [429, 502, 503, 504] {
            assert_eq!(name(unavailable), "UNAVAILABLE", "{unavailable}");
        }
        for other in [200, 204, 301, 405, 500, 501, 599] {
            assert_eq!(name(other), "UNKNOWN", "{other}");
        }
        assert_eq!(parse_http_status(b"503"), Some(503));
        assert_eq!(parse_http_status(b"50"), None);
        assert_eq!(parse_http_status(b"099"), None);
        assert_eq!(parse_http_status(b"5033"), None);
    }

    #[test]
    fn the_outcome_comes_from_headers_trailers_or_the_http_status() {
        // Trailers-only: the status is in the headers, whatever :status says.
        assert_eq!(
            outcome_from_headers(Some(b"14"), Some(b"200"), true),
            Some(GrpcCode::UNAVAILABLE)
        );
        assert_eq!(
            outcome_from_headers(Some(b"0"), Some(b"200"), false),
            Some(GrpcCode::OK)
        );
        // A normal answer: the trailers will say.
        assert_eq!(outcome_from_headers(None, Some(b"200"), false), None);
        // 200 that ended without any status.
        assert_eq!(
            outcome_from_headers(None, Some(b"200"), true),
            Some(GrpcCode::UNKNOWN)
        );
        // Not 200, no grpc-status: the HTTP mapping, whether or not a body follows.
        assert_eq!(
            outcome_from_headers(None, Some(b"503"), true),
            Some(GrpcCode::UNAVAILABLE)
        );
        assert_eq!(
            outcome_from_headers(None, Some(b"404"), false),
            Some(GrpcCode::UNIMPLEMENTED)
        );
        assert_eq!(
            outcome_from_headers(None, None, false),
            Some(GrpcCode::UNKNOWN)
        );
        assert_eq!(outcome_from_trailers(Some(b"13")), GrpcCode::INTERNAL);
        // Only a trailers-only or non-200 answer is asked for grpc-status in its headers.
        assert!(status_may_be_in_headers(Some(b"200"), true));
        assert!(!status_may_be_in_headers(Some(b"200"), false));
        assert!(status_may_be_in_headers(Some(b"503"), false));
        assert!(status_may_be_in_headers(None, false));
        assert_eq!(outcome_from_trailers(None), GrpcCode::UNKNOWN);
    }

    #[test]
    fn failure_code_sets_parse_names_and_refuse_others_by_index() {
        let default = GrpcCodeSet::default();
        assert_eq!(
            default.names(),
            [
                "UNKNOWN",
                "DEADLINE_EXCEEDED",
                "INTERNAL",
                "UNAVAILABLE",
                "DATA_LOSS"
            ]
        );
        assert!(default.contains(GrpcCode::UNAVAILABLE));
        assert!(!default.contains(GrpcCode::OK));
        assert!(!default.contains(GrpcCode::from_name("NOT_FOUND").unwrap()));
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let set = GrpcCodeSet::parse(&strings(&["NOT_FOUND", "UNAVAILABLE"])).unwrap();
        assert_eq!(set.names(), ["NOT_FOUND", "UNAVAILABLE"]);
        assert_eq!(GrpcCodeSet::parse(&[]).unwrap(), GrpcCodeSet::EMPTY);
        let (i, msg) = GrpcCodeSet::parse(&strings(&["INTERNAL", "unavailable"])).unwrap_err();
        assert_eq!(i, 1);
        assert!(
            msg.contains("`unavailable` is not a gRPC status code name"),
            "{msg}"
        );
        assert!(msg.contains("did you mean `UNAVAILABLE`?"), "{msg}");
        let (i, msg) = GrpcCodeSet::parse(&strings(&["OK", "OK", "14"])).unwrap_err();
        assert_eq!(i, 2);
        assert!(!msg.contains("did you mean"), "{msg}");
    }
}
