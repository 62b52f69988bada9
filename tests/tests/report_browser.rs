//! The `policy report -o html` page in a real headless browser (Debian's `chromium`, installed by
//! `cargo xtask setup`): the page of the repository's example policy draws its graph (one SVG
//! node per service of its embedded data, one line per edge), logs nothing to the console, and
//! makes no network request (Chromium's net log, filtered to the requests made for the page's
//! own `file://` site: the browser's own background traffic is not the page's), and a screenshot
//! is taken. Skipped, saying so, where `chromium` is not installed.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, ensure, Context, Result};
use enforcer_tests::cluster::enforcer_bin;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is in the repository")
        .to_path_buf()
}

/// `chromium` on `PATH`, if installed.
fn chromium() -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join("chromium"))
        .find(|p| p.is_file())
}

/// Headless Chromium with its own profile in `dir`, logging console messages to stderr.
fn browser(chromium: &Path, dir: &Path) -> Command {
    let mut cmd = Command::new(chromium);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-extensions",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=5000",
    ])
    .arg(format!("--user-data-dir={}", dir.join("profile").display()));
    cmd
}

/// Requests of the net log made for the page's own (`file://`) site, other than `file:` ones.
fn page_fetches(net_log: &Path) -> Result<Vec<String>> {
    let log: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(net_log)?)
        .with_context(|| format!("{} is not JSON", net_log.display()))?;
    let events = log["events"]
        .as_array()
        .context("no events in the net log")?;
    Ok(events
        .iter()
        .filter_map(|e| {
            let p = &e["params"];
            let site = p["network_isolation_key"].as_str()?;
            let url = p["url"].as_str()?;
            (site.contains("file://") && !url.starts_with("file:")).then(|| url.to_string())
        })
        .collect())
}

/// Counts of `needle` in `text`.
fn count(text: &str, needle: &str) -> usize {
    text.matches(needle).count()
}

#[test]
fn report_html_renders_in_a_headless_browser() -> Result<()> {
    let Some(chromium) = chromium() else {
        eprintln!("SKIP: chromium is not installed (cargo xtask setup installs it)");
        return Ok(());
    };
    let dir = tempdir()?;
    let out = Command::new(enforcer_bin()?)
        .args(["policy", "report", "-o", "html", "-f"])
        .arg(repo().join("examples"))
        .output()
        .context("running enforcer policy report")?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = dir.join("report.html");
    std::fs::write(&page, &out.stdout)?;
    let html = String::from_utf8(out.stdout)?;
    let url = format!("file://{}", page.display());

    let net_log = dir.join("net.json");
    let dom = browser(&chromium, &dir)
        .arg(format!("--log-net-log={}", net_log.display()))
        .args(["--dump-dom", &url])
        .output()
        .context("running chromium --dump-dom")?;
    ensure!(
        dom.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let (dom_text, log) = (
        String::from_utf8_lossy(&dom.stdout),
        String::from_utf8_lossy(&dom.stderr),
    );

    // The embedded data names the services; the script draws one node group each.
    let data = html
        .split_once(r#"<script id="data" type="application/json">"#)
        .and_then(|(_, rest)| rest.split_once("</script>"))
        .map(|(json, _)| json)
        .context("no embedded data in the page")?;
    let data: serde_json::Value = serde_json::from_str(data)?;
    let nodes = data["nodes"].as_array().map_or(0, Vec::len);
    let edges = data["edges"].as_array().map_or(0, Vec::len);
    ensure!(
        nodes > 0 && edges > 0,
        "the example has services and edges: {data}"
    );
    ensure!(
        count(&html, r#"<g class="node"#) == 0,
        "the page itself holds no drawn nodes (they are drawn by its script)"
    );
    ensure!(
        count(&dom_text, r#"<g class="node"#) == nodes,
        "{nodes} nodes drawn:\n{dom_text}"
    );
    ensure!(
        count(&dom_text, "<line ") >= edges,
        "{edges} edges drawn:\n{dom_text}"
    );
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
    ensure!(console.is_empty(), "console messages: {console:#?}");
    let fetches = page_fetches(&net_log)?;
    ensure!(fetches.is_empty(), "the page fetched {fetches:?}");

    let shot = dir.join("report.png");
    let status = browser(&chromium, &dir)
        .args(["--window-size=940,820"])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .output()?;
    ensure!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let png = std::fs::read(&shot).context("no screenshot")?;
    if !png.starts_with(b"\x89PNG") || png.len() < 10_000 {
        bail!("screenshot is not a drawn PNG ({} bytes)", png.len());
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn tempdir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("enforcer-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
