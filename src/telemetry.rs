//! Logging: `tracing` to standard error, human-readable or JSON. Phone numbers are only ever recorded masked
//! and codes never (the domain types' `Display`/`Debug` see to that).
//!
//! Traces: the same spans as OpenTelemetry spans (`tracing-opentelemetry`), exported by OTLP/gRPC to
//! `--otlp-endpoint` when given. Each gRPC call runs in a server span ([`TraceContextLayer`]) whose parent is the
//! caller's W3C `traceparent` (gRPC metadata), so otpd's spans join the caller's trace; the SMS provider's HTTP
//! request carries it on ([`inject_trace_context`]), and every JSON log line inside a call names its `trace_id`
//! and the call's `span_id`. Span fields are the ones `#[instrument]` records: masked numbers, purposes, never a
//! code, a token or a full number.

use std::fmt;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tonic::codegen::http::{HeaderMap, HeaderName, HeaderValue, Request};
use tonic::codegen::{BoxFuture, Service};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// For people.
    Pretty,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The filter when neither `OTPD_LOG` nor `RUST_LOG` is set: quiet for chatty dependencies.
pub const DEFAULT_FILTER: &str = "info,sqlx=warn,h2=warn,tower=warn,hyper=warn";

/// The tracer provider, kept to flush the spans still batched at exit.
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Installs the global subscriber, without exporting traces. Safe to call more than once (later calls do nothing).
pub fn init(format: LogFormat) {
    let _ = init_with(format, None);
}

/// Installs the global subscriber; with `otlp_endpoint` (e.g. `http://otel-collector:4317`) spans are exported
/// there by OTLP/gRPC in batches. Must run inside the Tokio runtime (the exporter's channel lives there). An
/// endpoint that is not a URL is an error; one that does not answer only loses spans (logged by the exporter).
pub fn init_with(format: LogFormat, otlp_endpoint: Option<&str>) -> Result<(), String> {
    use opentelemetry_otlp::WithExportConfig;
    let filter = std::env::var("OTPD_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(DEFAULT_FILTER));
    let resource = opentelemetry_sdk::Resource::builder().with_service_name("otpd").build();
    let mut provider = SdkTracerProvider::builder().with_resource(resource);
    let exporting = otlp_endpoint.is_some();
    if let Some(endpoint) = otlp_endpoint {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
            .map_err(|e| format!("--otlp-endpoint {endpoint}: {e}"))?;
        provider = provider.with_batch_exporter(exporter);
    }
    // Without an exporter spans are still made (and dropped when they end): they give log lines their ids.
    let provider = provider.build();
    // Nothing in otpd reads OpenTelemetry's active context (the provider's request takes its trace context from the
    // span itself), so entering a span does not activate one. What only an exported span shows (busy and idle
    // time, source location, thread) is recorded only when spans are exported: each costs every call, and every
    // poll of a call that waits, such as a refusal after its admission wait.
    let otel = tracing_opentelemetry::layer()
        .with_context_activation(false)
        .with_tracked_inactivity(exporting)
        .with_location(exporting)
        .with_threads(exporting)
        .with_tracer(provider.tracer("otpd"));
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let installed = match format {
        LogFormat::Pretty => registry.with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr)).try_init(),
        LogFormat::Json => {
            let json = tracing_subscriber::fmt::format().json().flatten_event(true).with_current_span(true);
            let layer = tracing_subscriber::fmt::layer()
                .fmt_fields(JsonFields::new())
                .event_format(WithTraceIds(json))
                .with_writer(std::io::stderr);
            registry.with(layer).try_init()
        }
    };
    if installed.is_ok() {
        let _ = PROVIDER.set(provider);
    }
    Ok(())
}

/// Exports the spans still batched (at exit).
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        let _ = provider.force_flush();
        let _ = provider.shutdown();
    }
}

/// The trace id and span id of a call's server span, kept in its span's extensions for the log lines inside it.
#[derive(Debug, Clone)]
struct TraceIds {
    trace_id: String,
    span_id: String,
}

/// A JSON event format that adds `trace_id` and `span_id` (of the call's server span) to each line inside a call.
struct WithTraceIds<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let ids =
            ctx.event_scope().and_then(|mut scope| scope.find_map(|span| span.extensions().get::<TraceIds>().cloned()));
        match (ids, line.strip_prefix('{')) {
            (Some(ids), Some(rest)) => {
                write!(writer, "{{\"trace_id\":\"{}\",\"span_id\":\"{}\",{rest}", ids.trace_id, ids.span_id)
            }
            _ => writer.write_str(&line),
        }
    }
}

/// W3C trace context from gRPC metadata (HTTP/2 headers).
struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// W3C trace context into an outgoing HTTP request's headers.
struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(key.as_bytes()), HeaderValue::from_str(&value)) {
            self.0.insert(name, value);
        }
    }
}

/// The `traceparent` (and `tracestate`) of the current span, for an outgoing HTTP request.
pub fn inject_trace_context(headers: &mut HeaderMap) {
    let context = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(headers));
}

/// Runs every gRPC call in a server span whose parent is the caller's `traceparent`, if it sent one.
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceContextLayer;

impl<S> tower_layer::Layer<S> for TraceContextLayer {
    type Service = TraceContext<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceContext(inner)
    }
}

/// A service wrapped by [`TraceContextLayer`].
#[derive(Debug, Clone)]
pub struct TraceContext<S>(S);

impl<S, ReqBody> Service<Request<ReqBody>> for TraceContext<S>
where
    S: Service<Request<ReqBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // The path is the method (/otp.v1.OtpService/SendCode): no caller data.
        let span = tracing::info_span!("grpc", otel.kind = "server", rpc.system = "grpc",
            rpc.method = %request.uri().path());
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(request.headers()));
        if parent.span().span_context().is_valid() {
            let _ = span.set_parent(parent);
        }
        // Outside any event, so the span can be built here and its ids kept for the log lines.
        let context = span.context();
        let ids = context.span().span_context().clone();
        if ids.is_valid() {
            span.with_subscriber(|(id, dispatch)| {
                if let Some(registry) = dispatch.downcast_ref::<tracing_subscriber::Registry>() {
                    if let Some(span) = registry.span(id) {
                        span.extensions_mut().insert(TraceIds {
                            trace_id: ids.trace_id().to_string(),
                            span_id: ids.span_id().to_string(),
                        });
                    }
                }
            });
        }
        let response = self.0.call(request);
        Box::pin(response.instrument(span))
    }
}

/// Displays an error with its whole `source()` chain: `a: b: c`.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}
