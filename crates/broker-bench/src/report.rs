//! Rows of figures: medians over runs, fractions of the baseline, a table for people and one
//! JSON line for machines.

use serde_json::{Map, Value, json};

use crate::stats::median;

/// One line of a scenario's result: labels (strings) and figures (numbers), in order.
#[derive(Clone, Debug, Default)]
pub struct Row(pub Vec<(String, Value)>);

impl Row {
    /// Adds a column.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Row {
        let value = value.into();
        let value = match value.as_f64() {
            Some(x) if value.is_f64() => round(x),
            _ => value,
        };
        self.set(key, value);
        self
    }

    /// Sets a column, replacing it if present.
    pub fn set(&mut self, key: &str, value: Value) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.0.push((key.to_owned(), value)),
        }
    }

    /// A column's number.
    pub fn num(&self, key: &str) -> Option<f64> {
        self.0.iter().find(|(k, _)| k == key)?.1.as_f64()
    }

    /// A column's text.
    pub fn text(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key)?.1.as_str()
    }
}

/// The rows of several runs of one scenario folded into one set: numbers become the median
/// of the runs, labels are the first run's.
pub fn medians(runs: Vec<Vec<Row>>) -> Vec<Row> {
    let Some(first) = runs.first().cloned() else {
        return Vec::new();
    };
    let count = runs.len();
    first
        .into_iter()
        .enumerate()
        .map(|(i, mut row)| {
            let keys: Vec<String> = row.0.iter().map(|(k, _)| k.clone()).collect();
            for key in keys {
                if row.num(&key).is_none() {
                    continue;
                }
                let values: Vec<f64> = runs
                    .iter()
                    .filter_map(|run| run.get(i).and_then(|r| r.num(&key)))
                    .collect();
                row.set(&key, round(median(values)));
            }
            row.set("runs", json!(count));
            row
        })
        .collect()
}

/// Figures rounded to what the machine's noise leaves meaningful.
pub fn round(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        json!(x as i64)
    } else if x.abs() >= 100.0 {
        json!(x.round() as i64)
    } else {
        json!((x * 1000.0).round() / 1000.0)
    }
}

/// Prints a scenario's rows as an aligned table.
pub fn print_table(scenario: &str, rows: &[Row]) {
    println!("== {scenario}");
    let mut columns: Vec<String> = Vec::new();
    for row in rows {
        for (k, _) in &row.0 {
            if !columns.contains(k) {
                columns.push(k.clone());
            }
        }
    }
    let cell = |row: &Row, k: &str| -> String {
        match row.0.iter().find(|(key, _)| key == k).map(|(_, v)| v) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => "-".into(),
            Some(v) => v.to_string(),
        }
    };
    let widths: Vec<usize> = columns
        .iter()
        .map(|c| {
            rows.iter()
                .map(|r| cell(r, c).len())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:>w$}"))
            .collect();
        println!("{}", parts.join("  "));
    };
    line(columns.clone());
    for row in rows {
        line(columns.iter().map(|c| cell(row, c)).collect());
    }
}

/// One JSON line: `{"scenario": …, "rows": [{…}, …]}`.
pub fn json_line(scenario: &str, rows: &[Row]) -> String {
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| Value::Object(r.0.iter().cloned().collect::<Map<String, Value>>()))
        .collect();
    json!({"scenario": scenario, "rows": rows}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_fold_numbers_and_keep_labels() {
        let run = |n: f64| vec![Row::default().with("server", "broker").with("rate", n)];
        let folded = medians(vec![run(10.0), run(30.0), run(20.0)]);
        assert_eq!(folded[0].text("server"), Some("broker"));
        assert_eq!(folded[0].num("rate"), Some(20.0));
        assert_eq!(folded[0].num("runs"), Some(3.0));
    }
}
