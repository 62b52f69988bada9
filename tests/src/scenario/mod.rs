pub mod model;
pub mod offline;
pub mod parse;
pub mod report;
