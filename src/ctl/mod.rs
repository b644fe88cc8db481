//! `otpctl`, the team lead's tool: look a code up for a driver on the phone, see why a number cannot log in,
//! unlock it (admins), read the audit log (auditors). Readable Korean/English output by default, `--json` for
//! scripts. The token comes from `OTPCTL_TOKEN`, never from the command line (it would land in shell history);
//! `otpctl login` adds the second factor and keeps the session (docs/sign-in.md), which later commands use.

mod render;
mod session;
mod tls;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use secrecy::{ExposeSecret, SecretString};
use tonic::transport::Channel;

use crate::domain::Purpose;
use crate::domain::audit::AuditAction;
use crate::grpc::convert::{action_to_pb, purpose_to_pb};
use crate::pb::otp::v1 as pb;
use pb::sign_in_service_client::SignInServiceClient;
use pb::supervisor_service_client::SupervisorServiceClient;

/// The `otpctl` command line.
#[derive(Debug, Parser)]
#[command(name = "otpctl", version, about = "Team lead's tool for otpd: code lookup, phone status, unlock, audit log")]
pub struct Args {
    /// The otpd admin listener: http://HOST:PORT, or https://HOST:PORT when it serves TLS.
    #[arg(long, env = "OTPCTL_SERVER", default_value = "http://127.0.0.1:50052", global = true)]
    pub server: String,
    /// TLS to the server.
    #[command(flatten)]
    pub tls: tls::ClientTlsArgs,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Where `otpctl login` keeps the session (0600); default `$XDG_STATE_HOME/otpctl/session.json` or
    /// `~/.local/state/otpctl/session.json`.
    #[arg(long, env = "OTPCTL_SESSION_FILE", global = true)]
    pub session_file: Option<std::path::PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Sign in with a second factor: your token (OTPCTL_TOKEN), then a code sent to your own phone (or, when the
    /// phone is not at hand, your emergency e-mail). The session is kept for later commands until it ends.
    Login {
        /// Where the code goes.
        #[arg(long, value_enum, default_value = "phone")]
        factor: LoginFactor,
    },
    /// End the kept session (everywhere at once) and forget it.
    Logout,
    /// Look up the code for a driver who keeps not receiving it (strong complaint). Ask the driver to press
    /// "send" in the app first.
    Lookup {
        /// The call you are on (`otpctl calls` lists them): the number is the call's, nothing else to type.
        #[arg(long, conflicts_with_all = ["caller", "callback"])]
        call: Option<String>,
        /// The number being verified (with --call: optional, and must be the call's number).
        #[arg(long, required_unless_present = "call")]
        phone: Option<String>,
        /// The call-centre ticket.
        #[arg(long)]
        ticket: String,
        /// Typed evidence, where the server allows it: the driver called in from this number.
        #[arg(long, required_unless_present_any = ["callback", "call"], conflicts_with = "callback")]
        caller: Option<String>,
        /// You called the driver back: the number you dialled.
        #[arg(long)]
        callback: Option<String>,
        /// Only this purpose: login, signup, reauth or change-phone (default: the most recent pending verification).
        #[arg(long, value_parser = parse_purpose)]
        purpose: Option<Purpose>,
    },
    /// Why can't this number log in? Failures, lock, pending codes and their delivery.
    Status {
        /// The call you are on: the status of its number.
        #[arg(long)]
        call: Option<String>,
        /// The number (with --call: optional, and must be the call's number).
        #[arg(long, required_unless_present = "call")]
        phone: Option<String>,
        /// The call-centre ticket.
        #[arg(long)]
        ticket: String,
    },
    /// Your calls on the line, as the phone system reported them (answered by your agent id, not ended).
    Calls,
    /// "Codes do not arrive": each delivery route's breaker and last error, send outcomes over the last 5 and 15
    /// minutes, front-line refusals and a database round trip, on one screen (admins).
    Doctor,
    /// Lift a number's lock (admins).
    Unlock {
        /// The number.
        #[arg(long)]
        phone: String,
        /// The call-centre ticket.
        #[arg(long)]
        ticket: String,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// The pumping guard's view of a destination prefix, and admins' exemptions and blocks.
    Guard {
        /// What to do.
        #[command(subcommand)]
        action: GuardCommand,
    },
    /// Read the audit log, newest first (auditors and admins).
    Audit {
        /// From this time: RFC 3339, or a duration ago such as `2h`.
        #[arg(long)]
        since: Option<String>,
        /// Before this time: RFC 3339, or a duration ago.
        #[arg(long)]
        until: Option<String>,
        /// Only this supervisor.
        #[arg(long)]
        actor: Option<String>,
        /// Only this number.
        #[arg(long)]
        phone: Option<String>,
        /// Only this action: lookup-code, get-phone-status, unlock-phone, list-audit-events, phone-locked,
        /// supervisor-added, supervisor-disabled or verify-audit-chain.
        #[arg(long, value_parser = parse_action)]
        action: Option<AuditAction>,
        /// At most this many events.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

/// `otpctl guard …`: a prefix is its first --prefix-digits E.164 digits (e.g. 8210123), or a whole number.
#[derive(Debug, Subcommand)]
pub enum GuardCommand {
    /// Whether the prefix is guarded, and the figures why.
    Status {
        /// The prefix, or a number of it.
        prefix: String,
    },
    /// Exempt the prefix from the guard until a time (admins).
    Exempt {
        /// The prefix, or a number of it.
        prefix: String,
        /// Until: RFC 3339, or a duration from now such as `2h` (at most 30 days).
        #[arg(long)]
        until: String,
        /// The ticket.
        #[arg(long)]
        ticket: String,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Refuse every send to the prefix until a time (admins).
    Block {
        /// The prefix, or a number of it.
        prefix: String,
        /// Until: RFC 3339, or a duration from now such as `7d` (at most 30 days).
        #[arg(long)]
        until: String,
        /// The ticket.
        #[arg(long)]
        ticket: String,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Remove an exemption or block: the figures decide again (admins).
    Clear {
        /// The prefix, or a number of it.
        prefix: String,
        /// The ticket.
        #[arg(long)]
        ticket: String,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
}

/// `2026-11-21T10:00:00Z`, or a duration from now (`2h`, `7d`).
fn parse_until(value: &str) -> Result<prost_types::Timestamp, Refusal> {
    let at = chrono::DateTime::parse_from_rfc3339(value).map(|t| t.with_timezone(&chrono::Utc)).or_else(|_| {
        humantime::parse_duration(value)
            .ok()
            .and_then(|d| chrono::TimeDelta::from_std(d).ok())
            .map(|d| chrono::Utc::now() + d)
            .ok_or(())
    });
    let at = at.map_err(|()| {
        Refusal::Usage(
            "--until: RFC 3339 시각 또는 기간(예: 2h) / an RFC 3339 time or a duration from now (e.g. 2h)".into(),
        )
    })?;
    Ok(prost_types::Timestamp { seconds: at.timestamp(), nanos: 0 })
}

/// The second factors `otpctl login` can use (a passkey needs a browser: use the console).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LoginFactor {
    /// A code to your registered phone.
    Phone,
    /// An emergency code to your registered e-mail address.
    Email,
}

/// A purpose as written on the command line (`change-phone` or `change_phone`).
fn parse_purpose(s: &str) -> Result<Purpose, String> {
    Purpose::from_db(&s.replace('-', "_")).ok_or_else(|| format!("`{s}`: use login, signup, reauth or change-phone"))
}

/// An audit action as written on the command line (`lookup-code` or `lookup_code`).
fn parse_action(s: &str) -> Result<AuditAction, String> {
    AuditAction::from_db(&s.replace('-', "_")).ok_or_else(|| format!("`{s}` is not an audit action (see --help)"))
}

/// Runs `otpctl`.
pub async fn run(args: Args) -> ExitCode {
    let session_path = args.session_file.clone().or_else(session::default_path);
    let kept = session_path.as_deref().and_then(|path| session::load(path, &args.server));
    let personal = std::env::var("OTPCTL_TOKEN").ok().filter(|t| !t.trim().is_empty()).map(SecretString::from);
    // Login takes the personal token; logout the session; everything else the session if one is kept.
    let token = match &args.command {
        CtlCommand::Login { .. } => personal,
        CtlCommand::Logout => kept,
        _ => kept.or(personal),
    };
    let Some(token) = token else {
        match args.command {
            CtlCommand::Logout => eprintln!("로그인되어 있지 않습니다. / Not signed in."),
            _ => eprintln!("OTPCTL_TOKEN이 설정되지 않았습니다. / Set OTPCTL_TOKEN to your supervisor token."),
        }
        return ExitCode::from(2);
    };
    // The token opens code lookups: never send it in clear past this machine.
    if reqwest::Url::parse(&args.server).is_ok_and(|url| crate::transport::plaintext_off_loopback(&url)) {
        eprintln!(
            "평문(http://)으로는 이 컴퓨터 밖의 서버에 토큰을 보내지 않습니다. https://를 사용하세요. / Refusing to send \
             the token in clear to {}: a server that is not on loopback needs https:// (with --ca if its \
             certificate is not from a public CA).",
            args.server
        );
        return ExitCode::from(2);
    }
    let tls = match args.tls.for_server(&args.server) {
        Ok(tls) => tls,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let client = match connect(&args.server, tls).await {
        Ok(client) => client,
        Err(e) => {
            // The causes say why: refused, unknown certificate issuer, no client certificate…
            let e = crate::telemetry::ErrorChain(&*e);
            eprintln!("서버에 연결할 수 없습니다: {} / Cannot reach the server: {e}", args.server);
            return ExitCode::FAILURE;
        }
    };
    let result = match args.command {
        CtlCommand::Login { factor } => login(client, &token, factor, session_path.as_deref(), &args.server).await,
        CtlCommand::Logout => logout(client, &token, session_path.as_deref()).await,
        command => call(SupervisorServiceClient::new(client), &token, command).await,
    };
    let result = match result {
        Ok(output) => output,
        Err(Refusal::Usage(message)) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
        Err(Refusal::Status(status)) => {
            render::error(&status, args.json);
            return ExitCode::FAILURE;
        }
    };
    if args.json {
        println!("{}", result.json);
    } else {
        print!("{}", result.text);
    }
    ExitCode::SUCCESS
}

/// What a command printed.
pub struct Output {
    /// For people.
    pub text: String,
    /// For scripts.
    pub json: serde_json::Value,
}

enum Refusal {
    Usage(String),
    Status(tonic::Status),
}

impl From<tonic::Status> for Refusal {
    fn from(status: tonic::Status) -> Self {
        Refusal::Status(status)
    }
}

async fn connect(
    server: &str,
    tls: Option<tonic::transport::ClientTlsConfig>,
) -> Result<Channel, Box<dyn std::error::Error>> {
    let mut endpoint = Channel::from_shared(server.to_owned())?;
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls)?;
    }
    Ok(endpoint.connect_timeout(Duration::from_secs(5)).timeout(Duration::from_secs(5 * 60)).connect().await?)
}

/// `otpctl login`: the factor's code, asked for on the terminal, for a session kept in the session file.
async fn login(
    channel: Channel,
    token: &SecretString,
    factor: LoginFactor,
    path: Option<&std::path::Path>,
    server: &str,
) -> Result<Output, Refusal> {
    let Some(path) = path else {
        return Err(Refusal::Usage("세션 파일 위치를 정할 수 없습니다. / Set --session-file (no HOME).".into()));
    };
    let mut client = SignInServiceClient::new(channel);
    let factor = match factor {
        LoginFactor::Phone => pb::SecondFactor::PhoneCode,
        LoginFactor::Email => pb::SecondFactor::EmailCode,
    };
    let started =
        client.start_sign_in(authed(pb::StartSignInRequest { factor: factor.into() }, token)?).await?.into_inner();
    let code = session::prompt_code(&started.destination)
        .map_err(|e| Refusal::Usage(format!("인증번호를 읽을 수 없습니다. / Cannot read the code: {e}")))?;
    let request = pb::FinishSignInRequest {
        sign_in_id: started.sign_in_id,
        code: code.expose_secret().to_owned(),
        ..Default::default()
    };
    let session = client.finish_sign_in(authed(request, token)?).await?.into_inner();
    let expires_at = session.expires_at.map(render::time_rfc3339).unwrap_or_default();
    session::save(path, server, &SecretString::from(session.session_token), &expires_at).map_err(|e| {
        Refusal::Usage(format!("세션을 저장할 수 없습니다. / Cannot keep the session in {}: {e}", path.display()))
    })?;
    Ok(render::signed_in(
        &session.session_id,
        &expires_at,
        session.idle_expires_at.map(render::time_rfc3339).as_deref(),
    ))
}

/// `otpctl logout`: ends the kept session on the server and forgets it.
async fn logout(channel: Channel, token: &SecretString, path: Option<&std::path::Path>) -> Result<Output, Refusal> {
    let ended = SignInServiceClient::new(channel).sign_out(authed(pb::SignOutRequest {}, token)?).await;
    if let Some(path) = path {
        session::forget(path).map_err(|e| Refusal::Usage(format!("{}: {e}", path.display())))?;
    }
    match ended {
        Ok(_) => Ok(render::signed_out()),
        // Already over on the server: forgetting it here is all there was to do.
        Err(status) if status.code() == tonic::Code::Unauthenticated => Ok(render::signed_out()),
        Err(status) => Err(status.into()),
    }
}

fn authed<T>(message: T, token: &SecretString) -> Result<tonic::Request<T>, Refusal> {
    let mut request = tonic::Request::new(message);
    let value = format!("Bearer {}", token.expose_secret()).parse().map_err(|_| {
        Refusal::Usage("OTPCTL_TOKEN에 사용할 수 없는 문자가 있습니다. / OTPCTL_TOKEN has invalid characters.".into())
    })?;
    request.metadata_mut().insert("authorization", value);
    Ok(request)
}

/// `2026-11-21T10:00:00Z`, or a duration ago (`90m`, `2h`).
fn parse_time(flag: &str, value: &str) -> Result<prost_types::Timestamp, Refusal> {
    let at = chrono::DateTime::parse_from_rfc3339(value).map(|t| t.with_timezone(&chrono::Utc)).or_else(|_| {
        humantime::parse_duration(value)
            .ok()
            .and_then(|d| chrono::TimeDelta::from_std(d).ok())
            .map(|d| chrono::Utc::now() - d)
            .ok_or(())
    });
    let at = at.map_err(|()| {
        Refusal::Usage(format!(
            "--{flag}: RFC 3339 시각 또는 기간(예: 2h) / an RFC 3339 time or a duration ago (e.g. 2h)"
        ))
    })?;
    Ok(prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    })
}

async fn call(
    mut client: SupervisorServiceClient<Channel>,
    token: &SecretString,
    command: CtlCommand,
) -> Result<Output, Refusal> {
    match command {
        CtlCommand::Login { .. } | CtlCommand::Logout => {
            Err(Refusal::Usage("login and logout are not supervisor calls".into()))
        }
        CtlCommand::Lookup { call, phone, ticket, caller, callback, purpose } => {
            let (contact, number) = match (caller, callback, &call) {
                (Some(n), _, _) => (pb::ContactChannel::InboundCall, n),
                (None, Some(n), _) => (pb::ContactChannel::OutboundCallback, n),
                (None, None, Some(_)) => (pb::ContactChannel::Unspecified, String::new()),
                (None, None, None) => {
                    return Err(Refusal::Usage(
                        "--call, --caller 또는 --callback 이 필요합니다. / Give --call, --caller or --callback.".into(),
                    ));
                }
            };
            let request = pb::LookupCodeRequest {
                phone_number: phone.unwrap_or_default(),
                purpose: purpose.map_or(pb::Purpose::Unspecified, purpose_to_pb).into(),
                ticket_id: ticket,
                reason: pb::LookupReason::StrongComplaint.into(),
                contact: contact.into(),
                contact_number: number,
                call_id: call.unwrap_or_default(),
            };
            let response = client.lookup_code(authed(request, token)?).await?.into_inner();
            Ok(render::lookup(&response))
        }
        CtlCommand::Status { call, phone, ticket } => {
            let request = pb::GetPhoneStatusRequest {
                phone_number: phone.unwrap_or_default(),
                ticket_id: ticket,
                call_id: call.unwrap_or_default(),
            };
            let response = client.get_phone_status(authed(request, token)?).await?.into_inner();
            Ok(render::status(&response))
        }
        CtlCommand::Doctor => {
            let response = client.diagnose(authed(pb::DiagnoseRequest {}, token)?).await?.into_inner();
            Ok(render::doctor(&response))
        }
        CtlCommand::Calls => {
            let response = client.list_my_calls(authed(pb::ListMyCallsRequest {}, token)?).await?.into_inner();
            Ok(render::calls(&response))
        }
        CtlCommand::Unlock { phone, ticket, reason } => {
            let request = pb::UnlockPhoneRequest { phone_number: phone, ticket_id: ticket, reason };
            let response = client.unlock_phone(authed(request, token)?).await?.into_inner();
            Ok(render::unlock(&response))
        }
        CtlCommand::Guard { action } => {
            let (prefix, action, until, ticket, reason) = match action {
                GuardCommand::Status { prefix } => {
                    let request = pb::GetPrefixGuardRequest { prefix };
                    let response = client.get_prefix_guard(authed(request, token)?).await?.into_inner();
                    return Ok(render::guard(response.guard.as_ref(), None));
                }
                GuardCommand::Exempt { prefix, until, ticket, reason } => {
                    (prefix, pb::PrefixGuardAction::Exempt, Some(parse_until(&until)?), ticket, reason)
                }
                GuardCommand::Block { prefix, until, ticket, reason } => {
                    (prefix, pb::PrefixGuardAction::Block, Some(parse_until(&until)?), ticket, reason)
                }
                GuardCommand::Clear { prefix, ticket, reason } => {
                    (prefix, pb::PrefixGuardAction::Clear, None, ticket, reason)
                }
            };
            let request = pb::SetPrefixGuardRequest { prefix, action: action.into(), until, ticket_id: ticket, reason };
            let response = client.set_prefix_guard(authed(request, token)?).await?.into_inner();
            Ok(render::guard(response.guard.as_ref(), Some(&response.audit_event_id)))
        }
        CtlCommand::Audit { since, until, actor, phone, action, limit } => {
            let mut events = Vec::new();
            let mut page_token = String::new();
            let base = pb::ListAuditEventsRequest {
                since: since.map(|s| parse_time("since", &s)).transpose()?,
                until: until.map(|s| parse_time("until", &s)).transpose()?,
                actor: actor.unwrap_or_default(),
                phone_number: phone.unwrap_or_default(),
                action: action.map_or(pb::AuditAction::Unspecified, action_to_pb).into(),
                ..Default::default()
            };
            while events.len() < limit as usize {
                let want = (limit as usize - events.len()).min(500);
                let request = pb::ListAuditEventsRequest {
                    page_size: i32::try_from(want).unwrap_or(500),
                    page_token: page_token.clone(),
                    ..base.clone()
                };
                let page = client.list_audit_events(authed(request, token)?).await?.into_inner();
                events.extend(page.events);
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            Ok(render::audit(&events))
        }
    }
}
