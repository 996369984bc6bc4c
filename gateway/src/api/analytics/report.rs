//! The reports: which rollup each reads, its measures, the dimensions it can be grouped
//! and filtered by, and the one SQL statement a request becomes. Reports read only the
//! 15-minute rollups (`sinks/migrations/clickhouse/003_analytics.sql`), never raw events.

/// A dimension a report can be grouped or filtered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dim {
    /// Its name in `group_by`, filters and answers.
    pub name: &'static str,
    /// The rollup's columns: the first is what a filter compares; all are returned.
    pub columns: &'static [(&'static str, &'static str)],
}

/// A dimension of one column.
macro_rules! dim {
    ($name:literal, $column:literal) => {
        Dim {
            name: $name,
            columns: &[($name, $column)],
        }
    };
}

pub const TENANT: Dim = dim!("tenant", "tenant_id");
const BUSINESS_NUMBER: Dim = dim!("business_number", "business_number");
const BSP: Dim = dim!("bsp", "bsp");
const COUNTRY: Dim = dim!("country", "country");
const TEMPLATE: Dim = Dim {
    name: "template",
    columns: &[
        ("template", "template_name"),
        ("language", "template_language"),
    ],
};
const CATEGORY: Dim = dim!("category", "pricing_category");
const TYPE: Dim = dim!("type", "pricing_type");
const PRICING_MODEL: Dim = dim!("pricing_model", "pricing_model");
const ERROR_CODE: Dim = Dim {
    name: "error_code",
    columns: &[
        ("error_code", "error_code"),
        ("error_title", "any(error_title)"),
    ],
};
const MESSAGE_TYPE: Dim = dim!("message_type", "message_type");

/// A measure: its name in answers and its aggregate over the rollup. `Quantiles` are
/// `[p50, p90, p99]`, answered as an object.
#[derive(Debug, Clone, Copy)]
pub enum Measure {
    Count(&'static str, &'static str),
    Quantiles(&'static str, &'static str),
}

pub struct Report {
    pub name: &'static str,
    table: &'static str,
    pub measures: &'static [Measure],
    pub dims: &'static [Dim],
    /// Grouped by these unless `group_by` says otherwise.
    pub default_group_by: &'static [&'static str],
    /// Rows of the rollup the report is about.
    condition: Option<&'static str>,
}

const FUNNEL_MEASURES: &[Measure] = &[
    Measure::Count("sent", "sum(sent_messages)"),
    Measure::Count("delivered", "sum(delivered_messages)"),
    Measure::Count("read", "sum(read_messages)"),
    Measure::Count("failed", "sum(failed_messages)"),
];

pub const REPORTS: &[Report] = &[
    Report {
        name: "funnel",
        table: "funnel_slots",
        measures: FUNNEL_MEASURES,
        dims: &[BUSINESS_NUMBER, BSP, COUNTRY, TEMPLATE],
        default_group_by: &[],
        condition: None,
    },
    Report {
        name: "templates",
        table: "funnel_slots",
        measures: FUNNEL_MEASURES,
        dims: &[TEMPLATE, BUSINESS_NUMBER, BSP, COUNTRY],
        default_group_by: &["template"],
        condition: Some("template_name != ''"),
    },
    Report {
        name: "failures",
        table: "failure_slots",
        measures: &[Measure::Count("failed", "sum(failed_messages)")],
        dims: &[ERROR_CODE, BUSINESS_NUMBER, BSP, COUNTRY],
        default_group_by: &["error_code"],
        condition: None,
    },
    Report {
        name: "billing",
        table: "billing_slots",
        measures: &[
            Measure::Count("priced", "sum(priced_messages)"),
            Measure::Count("billable", "sum(billable_messages)"),
        ],
        dims: &[CATEGORY, TYPE, COUNTRY, BUSINESS_NUMBER, BSP, PRICING_MODEL],
        default_group_by: &["category", "type"],
        condition: None,
    },
    Report {
        name: "latency",
        table: "latency_slots",
        measures: &[
            Measure::Count("delivered", "countIfMerge(delivered_messages)"),
            Measure::Quantiles(
                "sent_to_delivered_ms",
                "quantilesIfMerge(0.5, 0.9, 0.99)(delivered_ms)",
            ),
            Measure::Count("read", "countIfMerge(read_messages)"),
            Measure::Quantiles(
                "sent_to_read_ms",
                "quantilesIfMerge(0.5, 0.9, 0.99)(read_ms)",
            ),
        ],
        dims: &[BUSINESS_NUMBER, BSP, COUNTRY],
        default_group_by: &[],
        condition: None,
    },
    Report {
        name: "inbound",
        table: "inbound_slots",
        measures: &[Measure::Count("received", "sum(received_messages)")],
        dims: &[MESSAGE_TYPE, BUSINESS_NUMBER, BSP, COUNTRY],
        default_group_by: &["message_type"],
        condition: None,
    },
];

pub fn report(name: &str) -> Option<&'static Report> {
    REPORTS.iter().find(|r| r.name == name)
}

impl Report {
    /// The report's dimensions, with `tenant` for the operator's view.
    pub fn dim(&self, name: &str, operator: bool) -> Option<Dim> {
        if operator && name == TENANT.name {
            return Some(TENANT);
        }
        self.dims.iter().copied().find(|d| d.name == name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    Hour,
    Day,
    Month,
    Total,
}

impl Granularity {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "hour" => Self::Hour,
            "day" => Self::Day,
            "month" => Self::Month,
            "total" => Self::Total,
            _ => return None,
        })
    }

    /// The period's start (Unix seconds) and its wall-clock label in the zone `tz`
    /// (a bound parameter). Periods start at local midnights and month starts: an exact
    /// union of 15-minute slots in any zone in use.
    fn period_sql(self) -> Option<(&'static str, &'static str)> {
        Some(match self {
            Self::Hour => (
                "toUnixTimestamp(toStartOfHour(toTimeZone(slot, {tz})))",
                "formatDateTime(toStartOfHour(toTimeZone(slot, {tz})), '%Y-%m-%dT%H:00', {tz})",
            ),
            Self::Day => (
                "toUnixTimestamp(toStartOfDay(toTimeZone(slot, {tz})))",
                "formatDateTime(toStartOfDay(toTimeZone(slot, {tz})), '%Y-%m-%d', {tz})",
            ),
            Self::Month => (
                "toUnixTimestamp(toDateTime(toStartOfMonth(toTimeZone(slot, {tz})), {tz}))",
                "formatDateTime(toDateTime(toStartOfMonth(toTimeZone(slot, {tz})), {tz}), '%Y-%m', {tz})",
            ),
            Self::Total => return None,
        })
    }
}

/// One request, validated.
pub struct Question {
    pub report: &'static Report,
    /// `None`: every tenant (the operator's view).
    pub tenant: Option<String>,
    /// Unix seconds, on 15-minute boundaries.
    pub from: i64,
    pub to: i64,
    pub granularity: Granularity,
    pub time_zone: String,
    pub group_by: Vec<Dim>,
    pub filters: Vec<(Dim, String)>,
    /// Rows to ask for (one more than allowed, to tell that there are too many).
    pub limit: usize,
}

/// The statement and its string parameters, in order (`?` placeholders).
pub fn sql(q: &Question, database: &str) -> (String, Vec<String>) {
    let mut binds = Vec::new();
    let mut select = Vec::new();
    let mut group = Vec::new();
    let mut order = Vec::new();
    let tz_sql = |template: &str, binds: &mut Vec<String>| {
        let n = template.matches("{tz}").count();
        binds.extend(std::iter::repeat_n(q.time_zone.clone(), n));
        template.replace("{tz}", "?")
    };
    if let Some((start, label)) = q.granularity.period_sql() {
        select.push(format!("{} AS period_start", tz_sql(start, &mut binds)));
        select.push(format!("{} AS period", tz_sql(label, &mut binds)));
        group.extend(["period_start", "period"].map(String::from));
        order.push("period_start".to_string());
    }
    for d in &q.group_by {
        for (name, column) in d.columns {
            select.push(format!("{column} AS {name}"));
            // A companion that is an aggregate (an error's title) is not a key.
            if !column.contains('(') {
                group.push(name.to_string());
                order.push(name.to_string());
            }
        }
    }
    for m in q.report.measures {
        let (Measure::Count(name, agg) | Measure::Quantiles(name, agg)) = m;
        select.push(format!("{agg} AS {name}"));
    }
    let mut wh = vec![format!(
        "slot >= toDateTime({}) AND slot < toDateTime({})",
        q.from, q.to
    )];
    // Parameters bind in textual order: the SELECT's time zones first, then these.
    if let Some(t) = &q.tenant {
        wh.push("tenant_id = ?".into());
        binds.push(t.clone());
    }
    for (d, v) in &q.filters {
        wh.push(format!("{} = ?", d.columns[0].1));
        binds.push(v.clone());
    }
    if let Some(c) = q.report.condition {
        wh.push(c.to_string());
    }
    let mut sql = format!(
        "SELECT {} FROM {database}.{} WHERE {}",
        select.join(", "),
        q.report.table,
        wh.join(" AND ")
    );
    if !group.is_empty() {
        sql.push_str(&format!(" GROUP BY {}", group.join(", ")));
    }
    if !order.is_empty() {
        sql.push_str(&format!(" ORDER BY {}", order.join(", ")));
    }
    sql.push_str(&format!(" LIMIT {}", q.limit));
    (sql, binds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn question(report: &str, group_by: &[&str], g: Granularity) -> Question {
        let r = super::report(report).unwrap();
        Question {
            report: r,
            tenant: Some("ten_a".into()),
            from: 1_764_527_400,
            to: 1_764_613_800,
            granularity: g,
            time_zone: "Asia/Kolkata".into(),
            group_by: group_by.iter().map(|n| r.dim(n, false).unwrap()).collect(),
            filters: vec![(r.dim("country", false).unwrap(), "IN".into())],
            limit: 10_001,
        }
    }

    #[test]
    fn binds_follow_placeholders_in_order() {
        for r in REPORTS {
            for g in [
                Granularity::Hour,
                Granularity::Day,
                Granularity::Month,
                Granularity::Total,
            ] {
                let (sql, binds) = super::sql(&question(r.name, r.default_group_by, g), "sb");
                assert_eq!(sql.matches('?').count(), binds.len(), "{sql}");
                assert_eq!(binds.last().map(String::as_str), Some("IN"));
                assert!(sql.contains(&format!("FROM sb.{}", r.table)), "{sql}");
            }
        }
    }

    #[test]
    fn companions_are_grouped_or_aggregated() {
        let (sql, _) = super::sql(
            &question("templates", &["template"], Granularity::Total),
            "sb",
        );
        assert!(sql.contains("GROUP BY template, language"), "{sql}");
        let (sql, _) = super::sql(
            &question("failures", &["error_code"], Granularity::Day),
            "sb",
        );
        assert!(sql.contains("any(error_title) AS error_title"), "{sql}");
        assert!(
            sql.contains("GROUP BY period_start, period, error_code "),
            "{sql}"
        );
    }
}
