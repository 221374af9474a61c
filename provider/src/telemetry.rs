//! Logging: text by default, JSON with `--log-format-json`; `-v` levels map like klog.
//!
//! `-v` 0-1: essentials (start, stop, failed mounts); 2-4: one summary line per Mount;
//! 5 and up: per-object detail. `RUST_LOG` overrides the filter when set.
//! JSON lines are `{"time": RFC 3339, "level", "message", <fields>..., <span fields>...}`: the
//! fields of the spans an event happened in (a Mount's `request_id`, `pod`, `vault`, `identity`)
//! follow its own, so every line of a Mount can be tied to its pod under concurrency. Text lines
//! carry the same spans as a `mount{request_id=.. pod=..}:` prefix.

use std::fmt;
use tracing::{
    Event, Subscriber,
    field::Field,
    span::{Attributes, Id, Record},
};
use tracing_subscriber::{
    EnvFilter, Layer,
    fmt::{FmtContext, FormatEvent, FormatFields, format::Writer},
    layer::{Context, SubscriberExt},
    registry::LookupSpan,
    util::SubscriberInitExt,
};

/// The tracing filter for a klog verbosity.
pub fn filter_for(verbosity: u8) -> String {
    let ours = match verbosity {
        0 | 1 => "info",
        2..=4 => "debug",
        _ => "trace",
    };
    format!("warn,akv_csi_provider={ours}")
}

/// Collects an event's or a span's fields as JSON values.
#[derive(Default)]
struct JsonFields(serde_json::Map<String, serde_json::Value>);

/// Keeps every span's fields as JSON in the span's extensions, for [`JsonLines`].
struct SpanFields;

impl<S> Layer<S> for SpanFields
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = JsonFields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(fields) = span.extensions_mut().get_mut::<JsonFields>()
        {
            values.record(fields);
        }
    }
}

impl tracing::field::Visit for JsonFields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(
            field.name().to_owned(),
            serde_json::Value::String(format!("{value:?}")),
        );
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
}

/// One JSON object per line: `time`, `level`, `message`, then the event's fields.
struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = JsonFields::default();
        event.record(&mut fields);
        let mut line = serde_json::Map::new();
        let time = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        line.insert("time".into(), time.into());
        line.insert("level".into(), event.metadata().level().as_str().into());
        let message = fields.0.remove("message").unwrap_or_default();
        line.insert("message".into(), message);
        for (key, value) in fields.0 {
            line.entry(key).or_insert(value);
        }
        // The innermost span first: its fields win over an outer span's of the same name.
        if let Some(scope) = ctx.event_scope() {
            for span in scope {
                if let Some(span_fields) = span.extensions().get::<JsonFields>() {
                    for (key, value) in &span_fields.0 {
                        line.entry(key.clone()).or_insert_with(|| value.clone());
                    }
                }
            }
        }
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// Installs the global subscriber writing to stderr. Call once, at start.
pub fn init(verbosity: u8, json: bool) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter_for(verbosity)));
    let registry = tracing_subscriber::registry().with(filter);
    // A second init (tests) keeps the first subscriber.
    let _ = if json {
        registry
            .with(SpanFields)
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .event_format(JsonLines),
            )
            .try_init()
    } else {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_target(false),
            )
            .try_init()
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn klog_levels() {
        assert_eq!(super::filter_for(0), "warn,akv_csi_provider=info");
        assert_eq!(super::filter_for(2), "warn,akv_csi_provider=debug");
        assert_eq!(super::filter_for(5), "warn,akv_csi_provider=trace");
    }
}
