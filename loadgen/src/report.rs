//! Output of a finished run: the human report, the `--json` line, the `.hgrm` percentile file
//! (HdrHistogram's classic text format, values in milliseconds) and the `--plot` SVG chart
//! (latency by percentile on a log "1/(1-p)" axis, like HdrHistogram's plotter). Pure formatting:
//! the functions return strings; [`emit`] writes them where the flags say.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

use crate::config::{LoadConfig, Mode};
use crate::payload::Kind;
use crate::stats::Summary;

/// Prints the report (stdout, or stderr with `--json`), the JSON line, and writes the files.
pub fn emit(cfg: &LoadConfig, s: &Summary) -> anyhow::Result<()> {
    let human = human_report(cfg, s);
    if cfg.json {
        eprint!("{human}");
        println!("{}", json_line(s, &target_url(cfg), mode_name(cfg.mode)));
    } else {
        print!("{human}");
    }
    if let Some(path) = &cfg.hgrm {
        std::fs::write(path, hgrm(&s.hist))
            .map_err(|e| anyhow::anyhow!("--hgrm {}: {e}", path.display()))?;
    }
    if let Some(path) = &cfg.plot {
        let title = format!("{} — {}", target_url(cfg), mode_text(cfg));
        std::fs::write(path, svg_plot(&s.hist, &title))
            .map_err(|e| anyhow::anyhow!("--plot {}: {e}", path.display()))?;
    }
    Ok(())
}

/// The mode's one-word name for the JSON line.
fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Closed { .. } => "closed",
        Mode::Exact { .. } => "exact",
        Mode::Open { .. } => "open",
        Mode::ConnectOnly => "connect_only",
    }
}

/// A JSON string literal (quotes, backslashes and control characters escaped).
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for ch in text.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The target as a URL again (for titles).
fn target_url(cfg: &LoadConfig) -> String {
    let scheme = if cfg.target.tls { "wss" } else { "ws" };
    format!("{scheme}://{}{}", cfg.target.authority, cfg.target.path)
}

fn mode_text(cfg: &LoadConfig) -> String {
    let size = if cfg.size.is_fixed() {
        format!("{} B", cfg.size.min)
    } else {
        format!("{}..{} B", cfg.size.min, cfg.size.max)
    };
    let kind = match cfg.kind {
        Kind::Binary => "binary",
        Kind::Text => "text",
    };
    let mode = match cfg.mode {
        Mode::Closed { inflight } => {
            format!("closed loop, {} conns x {inflight} in flight", cfg.conns)
        }
        Mode::Exact { inflight, per_conn } => {
            format!(
                "exact count, {} conns x {per_conn} msgs, {inflight} in flight",
                cfg.conns
            )
        }
        Mode::Open { rate } => format!("open loop, {rate} msg/s over {} conns", cfg.conns),
        Mode::ConnectOnly => return format!("connect only, {} conns", cfg.conns),
    };
    format!("{mode}, {size} {kind}")
}

/// Formats microseconds with a unit that keeps three significant figures.
pub fn fmt_us(us: f64) -> String {
    if us >= 1_000_000.0 {
        format!("{:.2}s", us / 1e6)
    } else if us >= 1000.0 {
        format!("{:.2}ms", us / 1e3)
    } else {
        format!("{us:.1}us")
    }
}

fn fmt_count(n: f64) -> String {
    if n >= 1e9 {
        format!("{:.2}G", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.2}M", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1}k", n / 1e3)
    } else {
        format!("{n:.0}")
    }
}

/// The human-readable report.
pub fn human_report(cfg: &LoadConfig, s: &Summary) -> String {
    let c = &s.counters;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "ringway-load {} ({}, {} threads)",
        target_url(cfg),
        mode_text(cfg),
        cfg.threads
    );
    let _ = writeln!(
        out,
        "  connected     {}/{}  ({} upgrades in {:.3}s = {}/s)",
        s.connected,
        s.conns,
        s.upgrades,
        s.connect_time_s,
        fmt_count(s.upgrades_per_sec())
    );
    if cfg.mode != Mode::ConnectOnly {
        let _ = writeln!(
            out,
            "  messages      {} in {:.2}s = {} msg/s, {}B/s payload",
            c.messages,
            s.duration_s,
            fmt_count(s.msgs_per_sec()),
            fmt_count(s.bytes_per_sec())
        );
        let _ = writeln!(
            out,
            "  latency       {}  max {}{}",
            percentiles(|q| s.quantile_us(q)),
            fmt_us(s.max_us()),
            if matches!(cfg.mode, Mode::Open { .. }) {
                "  (from intended send time)"
            } else {
                ""
            }
        );
        if matches!(cfg.mode, Mode::Open { .. }) {
            let _ = writeln!(
                out,
                "  service time  {}  (from actual send time)",
                percentiles(|q| s.service_quantile_us(q))
            );
        }
    }
    let _ = writeln!(
        out,
        "  client cpu    {:.2}s (all threads, whole run incl. connect and drain)",
        s.client_cpu_s
    );
    let _ = writeln!(
        out,
        "  errors        {}  (lost {})  mismatches {}  unexpected closes {}  connect failures {}",
        c.errors, c.lost, c.mismatches, c.unexpected_closes, c.connect_failures
    );
    if c.unexpected_closes > 0 {
        let _ = writeln!(
            out,
            "  closed by     {}  (close codes; 1006: the connection ended without a Close)",
            c.close_codes_text()
        );
    }
    if let Some(first) = &s.first_error {
        let _ = writeln!(out, "  first error   {first}");
    }
    let _ = writeln!(
        out,
        "  result        {}",
        if s.is_clean() { "OK" } else { "FAILED" }
    );
    out
}

/// `p50 …  p90 …  p99 …  p99.9 …` of a quantile function (microseconds).
fn percentiles(quantile_us: impl Fn(f64) -> f64) -> String {
    format!(
        "p50 {}  p90 {}  p99 {}  p99.9 {}",
        fmt_us(quantile_us(0.5)),
        fmt_us(quantile_us(0.9)),
        fmt_us(quantile_us(0.99)),
        fmt_us(quantile_us(0.999))
    )
}

/// The `--json` line: what ran (`url`, `mode`), whether it passed (`pass`: no errors, mismatches, unexpected closes
/// or failed connects, the same rule as the report's `result`), the figures, and the codes of unexpected closes.
pub fn json_line(s: &Summary, url: &str, mode: &str) -> String {
    let c = &s.counters;
    let codes: Vec<String> = c
        .close_code_counts()
        .map(|(code, n)| format!("\"{code}\":{n}"))
        .collect();
    format!(
        concat!(
            "{{\"url\":{},\"mode\":{},\"pass\":{},\"close_codes\":{{{}}},\"conns\":{},\"duration_s\":{:.3},\"messages\":{},\"msgs_per_sec\":{:.1},",
            "\"bytes_per_sec\":{:.1},\"p50_us\":{:.1},\"p90_us\":{:.1},\"p99_us\":{:.1},",
            "\"p999_us\":{:.1},\"max_us\":{:.1},\"errors\":{},\"mismatches\":{},",
            "\"unexpected_closes\":{},\"connect_failures\":{},\"connected\":{},\"lost\":{},",
            "\"upgrades_per_sec\":{:.1},\"client_cpu_s\":{:.3},\"service_p50_us\":{:.1},",
            "\"service_p99_us\":{:.1},\"service_p999_us\":{:.1}}}"
        ),
        json_string(url),
        json_string(mode),
        s.is_clean(),
        codes.join(","),
        s.conns,
        s.duration_s,
        c.messages,
        s.msgs_per_sec(),
        s.bytes_per_sec(),
        s.quantile_us(0.5),
        s.quantile_us(0.9),
        s.quantile_us(0.99),
        s.quantile_us(0.999),
        s.max_us(),
        c.errors,
        c.mismatches,
        c.unexpected_closes,
        c.connect_failures,
        s.connected,
        c.lost,
        s.upgrades_per_sec(),
        s.client_cpu_s,
        s.service_quantile_us(0.5),
        s.service_quantile_us(0.99),
        s.service_quantile_us(0.999),
    )
}

/// HdrHistogram's percentile distribution text (as `outputPercentileDistribution` writes it,
/// 5 ticks per half distance), values in milliseconds.
pub fn hgrm(hist: &Histogram<u64>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    if !hist.is_empty() {
        // TotalCount is cumulative: the observations at or below the row's value (HdrHistogram's format).
        let mut total = 0u64;
        for v in hist.iter_quantiles(5) {
            total += v.count_since_last_iteration();
            let q = v.quantile_iterated_to();
            let value = v.value_iterated_to() as f64 / 1e6;
            if q < 1.0 {
                let _ = writeln!(
                    out,
                    "{value:12.3} {q:2.12} {total:10} {:14.2}",
                    1.0 / (1.0 - q)
                );
            } else {
                let _ = writeln!(out, "{value:12.3} {q:2.12} {total:10}");
            }
        }
    }
    let mean = if hist.is_empty() {
        0.0
    } else {
        hist.mean() / 1e6
    };
    let stdev = if hist.is_empty() {
        0.0
    } else {
        hist.stdev() / 1e6
    };
    let max = if hist.is_empty() {
        0.0
    } else {
        hist.max() as f64 / 1e6
    };
    let _ = writeln!(
        out,
        "#[Mean    = {mean:12.3}, StdDeviation   = {stdev:12.3}]"
    );
    let _ = writeln!(
        out,
        "#[Max     = {max:12.3}, Total count    = {:12}]",
        hist.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        hist.buckets(),
        2048
    );
    out
}

/// A latency-by-percentile SVG chart: x = percentile on a log scale of 1/(1-p) (0% .. 99.999%),
/// y = latency in milliseconds (linear).
pub fn svg_plot(hist: &Histogram<u64>, title: &str) -> String {
    const W: f64 = 900.0;
    const H: f64 = 500.0;
    const LEFT: f64 = 80.0;
    const RIGHT: f64 = 30.0;
    const TOP: f64 = 50.0;
    const BOTTOM: f64 = 60.0;
    // x axis: log10(1/(1-p)) from 0 (p=0) to 5 (p=99.999%).
    const DECADES: f64 = 5.0;
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let points: Vec<(f64, f64)> = if hist.is_empty() {
        Vec::new()
    } else {
        hist.iter_quantiles(10)
            .map(|v| {
                let q = v.quantile_iterated_to().min(1.0 - 10f64.powf(-DECADES));
                (
                    (1.0 / (1.0 - q)).log10(),
                    v.value_iterated_to() as f64 / 1e6,
                )
            })
            .collect()
    };
    let max_ms = points.iter().map(|p| p.1).fold(0.0f64, f64::max);
    let y_top = nice_ceiling(max_ms.max(0.001));
    let x = |d: f64| LEFT + pw * (d / DECADES).clamp(0.0, 1.0);
    let y = |ms: f64| TOP + ph * (1.0 - ms / y_top);

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="25" text-anchor="middle" font-size="15">{}</text>"#,
        W / 2.0,
        xml_escape(title)
    );
    for (d, label) in [
        (0.0, "0%"),
        (1.0, "90%"),
        (2.0, "99%"),
        (3.0, "99.9%"),
        (4.0, "99.99%"),
        (5.0, "99.999%"),
    ] {
        let px = x(d);
        let _ = writeln!(
            svg,
            r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{:.1}" stroke="#ddd"/>"##,
            TOP + ph
        );
        let _ = writeln!(
            svg,
            r#"<text x="{px:.1}" y="{:.1}" text-anchor="middle">{label}</text>"#,
            TOP + ph + 18.0
        );
    }
    for i in 0..=5 {
        let ms = y_top * f64::from(i) / 5.0;
        let py = y(ms);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#ddd"/>"##,
            LEFT + pw
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 6.0,
            py + 4.0,
            trim_float(ms)
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">Percentile</text>"#,
        LEFT + pw / 2.0,
        H - 15.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="20" y="{:.1}" text-anchor="middle" transform="rotate(-90 20 {:.1})">Latency (ms)</text>"#,
        TOP + ph / 2.0,
        TOP + ph / 2.0
    );
    let _ = writeln!(
        svg,
        r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>"##
    );
    if !points.is_empty() {
        let mut path = String::new();
        for (i, (d, ms)) in points.iter().enumerate() {
            let _ = write!(
                path,
                "{}{:.1},{:.1} ",
                if i == 0 { "M" } else { "L" },
                x(*d),
                y(*ms)
            );
        }
        let _ = writeln!(
            svg,
            r##"<path d="{}" fill="none" stroke="#1f77b4" stroke-width="2"/>"##,
            path.trim_end()
        );
    } else {
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">no samples</text>"#,
            LEFT + pw / 2.0,
            TOP + ph / 2.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// The smallest 1/2/5 × 10^n at or above `v`.
fn nice_ceiling(v: f64) -> f64 {
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * mag >= v {
            return m * mag;
        }
    }
    10.0 * mag
}

fn trim_float(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{Counters, new_histogram};

    fn summary() -> Summary {
        let mut hist = new_histogram();
        for us in 1..=1000u64 {
            hist.record(us * 1000).unwrap();
        }
        let mut service = new_histogram();
        for us in 1..=1000u64 {
            service.record(us * 100).unwrap();
        }
        Summary {
            conns: 10,
            duration_s: 2.0,
            hist,
            service,
            counters: Counters {
                messages: 1000,
                bytes: 64_000,
                ..Counters::default()
            },
            connected: 10,
            first_error: None,
            client_cpu_s: 0.25,
            upgrades: 10,
            connect_time_s: 0.01,
        }
    }

    #[test]
    fn json_line_has_every_field_and_values() {
        let line = json_line(&summary(), "ws://h:1/p\"q", "closed");
        assert!(
            line.starts_with("{\"url\":\"ws://h:1/p\\\"q\",\"mode\":\"closed\",\"pass\":"),
            "{line}"
        );
        assert!(line.contains("\"close_codes\":{}"), "{line}");
        for field in [
            "conns",
            "duration_s",
            "messages",
            "msgs_per_sec",
            "bytes_per_sec",
            "p50_us",
            "p90_us",
            "p99_us",
            "p999_us",
            "max_us",
            "errors",
            "mismatches",
            "unexpected_closes",
            "connect_failures",
            "connected",
            "upgrades_per_sec",
            "service_p50_us",
            "service_p99_us",
            "service_p999_us",
        ] {
            assert!(
                line.contains(&format!("\"{field}\":")),
                "{field} missing in {line}"
            );
        }
        assert!(line.contains("\"msgs_per_sec\":500.0"));
        assert!(line.contains("\"service_p50_us\":50.0"), "{line}");
        assert!(line.contains("\"max_us\":1000."), "{line}");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn hgrm_lists_percentiles_up_to_the_max() {
        let text = hgrm(&summary().hist);
        assert!(text.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)"));
        let last = text
            .lines()
            .rfind(|l| !l.starts_with('#') && !l.trim().is_empty())
            .unwrap();
        assert!(last.contains("1.000000000000"), "{last}");
        // The last row's TotalCount is every observation; the column never decreases.
        let totals: Vec<u64> = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty() && !l.contains("Value"))
            .map(|l| l.split_whitespace().nth(2).unwrap().parse().unwrap())
            .collect();
        assert_eq!(totals.last(), Some(&1000));
        assert!(totals.windows(2).all(|w| w[0] <= w[1]), "{totals:?}");
        assert!(text.contains("Total count    =         1000"));
    }

    #[test]
    fn svg_is_well_formed_and_has_a_curve() {
        let svg = svg_plot(&summary().hist, "a <test>");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("<path d=\"M"));
        assert!(svg.contains("a &lt;test&gt;"));
        assert!(svg.contains("99.999%"));
        let empty = svg_plot(&new_histogram(), "t");
        assert!(empty.contains("no samples"));
    }

    #[test]
    fn units_format_readably() {
        assert_eq!(fmt_us(12.34), "12.3us");
        assert_eq!(fmt_us(1500.0), "1.50ms");
        assert_eq!(fmt_us(2_500_000.0), "2.50s");
        assert_eq!(nice_ceiling(3.2), 5.0);
        assert_eq!(nice_ceiling(0.7), 1.0);
    }
}
