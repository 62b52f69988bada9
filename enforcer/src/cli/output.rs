//! One printer for every listing: table, YAML or JSON (`-o`).

use anyhow::Result;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    #[default]
    Table,
    Yaml,
    Json,
}

/// Print `value` as YAML or JSON, or `table` as a table.
pub fn print<T: Serialize>(format: Format, value: &T, table: impl FnOnce() -> Table) -> Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Format::Yaml => print!("{}", serde_yaml_ng::to_string(value)?),
        Format::Table => print!("{}", table().render()),
    }
    Ok(())
}

/// The instant of a Unix time in milliseconds; a time past jiff's range (year 9999), which no
/// clock gives, shows as its last instant.
pub fn utc(ms: u64) -> jiff::Timestamp {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .unwrap_or(jiff::Timestamp::MAX)
}

/// A plain, aligned table with an upper-case header (kubectl style): no borders, columns
/// left-aligned and three spaces apart, no trailing blanks. Rendered by `comfy-table`.
pub struct Table {
    pub headers: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: Vec<&'static str>) -> Self {
        Table {
            headers,
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let mut table = comfy_table::Table::new();
        table
            .load_style(comfy_table::presets::NOTHING)
            .set_header(self.headers.clone())
            .add_rows(self.rows.clone());
        let last = table.column_count().saturating_sub(1);
        for (i, column) in table.column_iter_mut().enumerate() {
            column.set_padding((0, if i == last { 0 } else { 3 }));
        }
        let mut out = String::new();
        for line in table.lines() {
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::Table;

    #[test]
    fn columns_align_three_spaces_apart_without_trailing_blanks() {
        let mut t = Table::new(vec!["A", "BB", "C"]);
        t.row(vec!["xx".into(), "y".into(), "zzz".into()]);
        t.row(vec![String::new(); 3]);
        t.row(vec!["1".into(), String::new(), "3".into()]);
        assert_eq!(t.render(), "A    BB   C\nxx   y    zzz\n\n1         3\n");
    }

    #[test]
    fn a_table_without_rows_is_its_header() {
        assert_eq!(
            Table::new(vec!["MAP", "ENTRIES"]).render(),
            "MAP   ENTRIES\n"
        );
    }
}
