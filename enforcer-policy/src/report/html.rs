//! The report as one self-contained HTML page: the data embedded as JSON, the graph drawn
//! client-side as SVG by inline JavaScript; no network fetch.

use super::Report;

const PAGE: &str = include_str!("report.html");

/// The page for `r`.
pub fn render(r: &Report) -> Result<String, serde_json::Error> {
    // `</` cannot close the script element when escaped as `<\/`.
    let data = serde_json::to_string(r)?.replace("</", "<\\/");
    Ok(PAGE.replace("/*DATA*/null", &data))
}
