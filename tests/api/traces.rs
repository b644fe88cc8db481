//! OpenTelemetry traces from a real `otpd` process to a real OTLP/gRPC receiver written here from the OTLP protos
//! (opentelemetry-proto's tonic service): a SendCode made with a W3C `traceparent` arrives as a span tree under the
//! caller's trace id, the SMS provider's request carries the trace on, every JSON log line inside the call names
//! the trace, and no span attribute holds the code or the full number.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::trace::v1::Span;
use otpd::pb::otp::v1 as pb;

use crate::helpers::*;
use crate::provider::{FakeProvider, Reply};

/// The spans received.
#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<Span>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans = request.into_inner().resource_spans.into_iter().flat_map(|r| r.scope_spans).flat_map(|s| s.spans);
        self.0.lock().unwrap().extend(spans);
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

async fn start_receiver() -> (SocketAddr, Receiver) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let receiver = Receiver::default();
    let service = TraceServiceServer::new(receiver.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
    });
    (addr, receiver)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every attribute value of a span, as text.
fn attribute_values(span: &Span) -> Vec<String> {
    span.attributes.iter().map(|kv| format!("{}={:?}", kv.key, kv.value)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_code_spans_reach_an_otlp_receiver_under_the_callers_trace() {
    const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const CALLER_SPAN: &str = "00f067aa0ba902b7";
    let (collector, receiver) = start_receiver().await;
    let provider = FakeProvider::start(vec![], Reply::Accept("m-1")).await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("otpd.db").display());
    let mut args = process_args(&db, &dir.path().join("sms.jsonl"));
    let gateway = provider.gateway();
    let endpoint = format!("http://{collector}");
    let sms = args.iter().position(|a| a == "--sms-gateway").unwrap();
    args[sms + 1] = gateway;
    args.extend(["--otlp-endpoint".to_owned(), endpoint, "--log-format".to_owned(), "json".to_owned()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let otpd = OtpdProcess::start(dir.path(), "otpd", &args, &[]).await;

    let mut request = tonic::Request::new(send_req("010-1234-5678", pb::Purpose::Login));
    let traceparent = format!("00-{TRACE_ID}-{CALLER_SPAN}-01");
    request.metadata_mut().insert("traceparent", traceparent.parse().unwrap());
    otpd.otp().await.send_code(request).await.unwrap();
    let code = provider.received()[0].body["text"].as_str().map(code_in).unwrap_or_default();

    // The provider's request carried the same trace on, from one of otpd's spans.
    let sent = provider.received()[0].traceparent.clone().expect("a traceparent to the provider");
    assert!(sent.starts_with(&format!("00-{TRACE_ID}-")) && !sent.contains(CALLER_SPAN), "{sent}");

    // Spans are exported in batches (every 5 s) and at exit.
    let (_, log) = otpd.terminate().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let spans = loop {
        let spans: Vec<Span> =
            receiver.0.lock().unwrap().iter().filter(|s| hex(&s.trace_id) == TRACE_ID).cloned().collect();
        if spans.iter().any(|s| s.name == "SendCode") || tokio::time::Instant::now() > deadline {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    // The server span is the caller's child; SendCode is the server span's; the rest hang below SendCode.
    let server = spans.iter().find(|s| s.name == "grpc").unwrap_or_else(|| panic!("no server span: {names:?}"));
    assert_eq!(hex(&server.parent_span_id), CALLER_SPAN);
    let send = spans.iter().find(|s| s.name == "SendCode").unwrap_or_else(|| panic!("no SendCode span: {names:?}"));
    assert_eq!(send.parent_span_id, server.span_id);
    let below: Vec<&Span> = spans.iter().filter(|s| s.parent_span_id == send.span_id).collect();
    assert!(!below.is_empty(), "SendCode has child spans: {names:?}");
    assert!(sent.contains(&hex(&server.span_id)) || spans.iter().any(|s| sent.contains(&hex(&s.span_id))), "{sent}");

    // No span attribute holds the full number or the code.
    assert!(code.len() == 6, "the code the provider was sent: {code:?}");
    for span in &spans {
        for value in attribute_values(span) {
            for secret in ["+821012345678", "01012345678", "010-1234-5678", code.as_str()] {
                assert!(!value.contains(secret), "span {} attribute {value} holds {secret}", span.name);
            }
        }
    }

    // Every JSON log line of the call names the trace.
    let call_lines: Vec<&str> = log.lines().filter(|l| l.contains("SendCode")).collect();
    assert!(!call_lines.is_empty(), "{log}");
    for line in call_lines {
        let json: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert_eq!(json["trace_id"], TRACE_ID, "{line}");
        assert_eq!(json["span_id"], hex(&server.span_id), "{line}");
    }
}
