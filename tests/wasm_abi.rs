//! The built `.wasm` exports `proxy_abi_version_0_2_1`: the ABI routing depends on.
//!
//! Why: the filter writes the route header and relies on Envoy to clear the route
//! cache afterwards, so that the route table sees the header. Since Envoy 1.33 Envoy
//! does that only for plugins of ABI 0.2.1 or older (envoyproxy/envoy#36671); a
//! newer ABI must call `clear_route_cache` itself. If a proxy-wasm SDK upgrade moves
//! the module to a newer ABI, the route header would silently stop steering
//! requests: this test fails first. (The end-to-end routing tests would catch it
//! too, but only as "everyone goes to stable", not with the reason.)

use std::path::PathBuf;

/// A LEB128 unsigned integer at `*at`, advancing it.
fn leb128(bytes: &[u8], at: &mut usize) -> u64 {
    let mut value = 0u64;
    let mut shift = 0;
    loop {
        let byte = bytes[*at];
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return value;
        }
        shift += 7;
        assert!(shift < 64, "LEB128 too long at {at}");
    }
}

/// The names of the function exports (kind 0) in the module's export section.
fn function_exports(module: &[u8]) -> Vec<String> {
    assert_eq!(&module[..4], b"\0asm", "not a Wasm module");
    assert_eq!(&module[4..8], &[1, 0, 0, 0], "Wasm binary version 1");
    let mut at = 8;
    let mut names = Vec::new();
    while at < module.len() {
        let id = module[at];
        at += 1;
        let size = leb128(module, &mut at) as usize;
        let end = at + size;
        if id == 7 {
            let mut p = at;
            let count = leb128(module, &mut p);
            for _ in 0..count {
                let len = leb128(module, &mut p) as usize;
                let name = String::from_utf8(module[p..p + len].to_vec()).expect("UTF-8 name");
                p += len;
                let kind = module[p];
                p += 1;
                let _index = leb128(module, &mut p);
                if kind == 0 {
                    names.push(name);
                }
            }
            assert_eq!(p, end, "export section size");
        }
        at = end;
    }
    names
}

#[test]
fn the_built_module_exports_the_abi_0_2_1_that_route_cache_clearing_needs() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/wasm32-wasip1/release/canary_router.wasm");
    let module = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: run `make build`. This test never skips.",
            path.display()
        )
    });
    let exports = function_exports(&module);
    let abis: Vec<&String> = exports
        .iter()
        .filter(|n| n.starts_with("proxy_abi_version_"))
        .collect();
    assert_eq!(
        abis,
        ["proxy_abi_version_0_2_1"],
        "the module's ABI changed: Envoy >= 1.33 clears the route cache after a header change only \
         for ABI <= 0.2.1 (envoyproxy/envoy#36671); call clear_route_cache explicitly first"
    );
    // And the parser does read exports: the entry points Envoy calls are there.
    for name in [
        "proxy_on_request_headers",
        "proxy_on_configure",
        "proxy_on_memory_allocate",
    ] {
        assert!(exports.iter().any(|n| n == name), "{name} in {exports:?}");
    }
}
