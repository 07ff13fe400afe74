//! The route-file loader (`ringway_config::parse`, offline: no DNS): any bytes, read as YAML, give a config or an
//! error, never a panic; an error names a line and column inside the text; a config that loads describes itself
//! (`summary`) without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringway_config::ConfigError;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match ringway_config::parse_offline(&text, "fuzz.yaml") {
        Ok(config) => {
            let _ = config.summary();
        }
        Err(ConfigError::Syntax { line, column, .. } | ConfigError::Invalid { line, column, .. }) => {
            assert!(line >= 1 && column >= 1, "position {line}:{column}");
            let breaks = text.bytes().filter(|b| matches!(b, b'\n' | b'\r')).count() as u64;
            assert!(line <= breaks + 2, "line {line} past the text");
        }
        Err(_) => {}
    }
});
