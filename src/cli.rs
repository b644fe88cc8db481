//! What `otpd` does with its command line: serve (default), migrate, manage supervisors, verify the audit log.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use secrecy::ExposeSecret;

use crate::clock::{Clock, SystemClock};
use crate::config::{AuditCommand, Cli, Command, Config, SupervisorsCommand};
use crate::domain::audit::{AuditAction, AuditKey, ChainVerifier, Expectations, NewAuditEvent};
use crate::startup::{Application, load_audit_key};
use crate::store::Stores;
use crate::supervision::token;
use crate::supervision::trace;
use crate::telemetry::{self, ErrorChain};

/// Runs the command and returns the process exit code.
pub async fn run(cli: Cli) -> ExitCode {
    if let Err(error) = telemetry::init_with(cli.settings.log_format, cli.settings.otlp_endpoint.as_deref()) {
        eprintln!("otpd: invalid setting {error}");
        return ExitCode::from(2);
    }
    for name in crate::config::unknown_env_vars() {
        tracing::warn!(variable = %name, "unknown OTPD_* environment variable ignored");
    }
    let config = match cli.settings.validate() {
        Ok(config) => config,
        Err(error) => {
            tracing::error!("{error}");
            eprintln!("otpd: {error}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => match Application::build(config).await {
            Ok(app) => app.run_until(shutdown_signal()).await,
            Err(error) => Err(error),
        },
        Command::Migrate => open(&config.database_url).await.map(|_| tracing::info!("migrations applied")),
        Command::Supervisors { command } => match open_keyed(&config).await {
            Ok((stores, key)) => supervisors(&stores, &key, &config.allowed_countries, command).await,
            Err(error) => Err(error),
        },
        Command::Healthcheck(args) => crate::healthcheck::check(&config, &args).await,
        Command::Audit { command: AuditCommand::Verify { expect_head } } => {
            let expect = Expectations { heads: expect_head, unkeyed_through: config.accept_unkeyed_through };
            match open_keyed(&config).await {
                Ok((stores, key)) => verify_audit(&stores, key, expect).await,
                Err(error) => Err(error),
            }
        }
    };
    // The spans still batched go out before the process does (a blocking flush, off the runtime's threads).
    let _ = tokio::task::spawn_blocking(telemetry::shutdown).await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let chain = ErrorChain(error.as_ref());
            tracing::error!(error = %chain, "otpd failed");
            eprintln!("otpd: {chain}");
            ExitCode::FAILURE
        }
    }
}

/// Connects and applies migrations.
async fn open(url: &str) -> anyhow::Result<Stores> {
    let stores = crate::store::connect(url).await.context("connecting to the database")?;
    stores.verification.migrate().await.context("migrating the database")?;
    Ok(stores)
}

/// Reads the audit key, then connects and migrates (so a command run from the wrong place creates nothing).
async fn open_keyed(config: &Config) -> anyhow::Result<(Stores, AuditKey)> {
    let key = load_audit_key(config).await?;
    Ok((open(&config.database_url).await?, key))
}

async fn supervisors(
    stores: &Stores,
    key: &AuditKey,
    allowed: &crate::domain::AllowedCountries,
    command: SupervisorsCommand,
) -> anyhow::Result<()> {
    let now = SystemClock.now();
    let mut out = std::io::stdout().lock();
    match command {
        SupervisorsCommand::Add { name, role, agent_id, phone, email, service } => {
            let kind = if service { crate::domain::TokenKind::Service } else { crate::domain::TokenKind::Person };
            if service && role != crate::domain::Role::Auditor {
                anyhow::bail!("a service token's role must be auditor: scripts never look codes up");
            }
            let phone = phone.map(|p| contact_phone(&p, allowed)).transpose()?;
            if let Some(agent) = &agent_id {
                let supervisors = stores.supervision.list_supervisors().await?;
                if let Some(holder) = supervisors.iter().find(|s| s.agent_id.as_deref() == Some(agent.as_str())) {
                    anyhow::bail!("agent id {agent} already belongs to `{}`", holder.name);
                }
            }
            let secret = token::generate();
            let event = NewAuditEvent::by_operator(AuditAction::SupervisorAdded, now, format!("added {name} ({role})"));
            let hash = token::hash_secret(&secret);
            let Some(event) = stores.supervision.add_supervisor(&name, role, kind, &hash, event, key).await? else {
                anyhow::bail!("a supervisor named `{name}` already exists");
            };
            trace(&event);
            if let Some(agent) = &agent_id {
                set_agent(stores, key, &name, Some(agent), now).await?;
            }
            if phone.is_some() || email.is_some() {
                set_contact(stores, key, &name, phone.as_ref().map(Some), email.as_ref().map(Some), now).await?;
            }
            // The token alone on stdout, so `TOKEN=$(otpd supervisors add …)` works; it is shown only now.
            writeln!(out, "{}", secret.expose_secret())?;
        }
        SupervisorsCommand::List => {
            writeln!(
                out,
                "{:<24} {:<10} {:<8} {:<12} {:<18} {:<24} {:<20} DISABLED",
                "NAME", "ROLE", "KIND", "AGENT", "PHONE", "E-MAIL", "CREATED"
            )?;
            for s in stores.supervision.list_supervisors().await? {
                let fmt = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M UTC").to_string();
                let disabled = s.disabled_at.map_or_else(|| "-".to_owned(), fmt);
                let agent = s.agent_id.as_deref().unwrap_or("-");
                // Contacts are shown masked, as in the audit log.
                let phone = s.phone.as_deref().and_then(|p| contact_phone(p, allowed).ok());
                let phone = phone.as_ref().map_or("-", |p| p.masked());
                let email = s.email.as_deref().and_then(|e| e.parse::<crate::domain::EmailAddress>().ok());
                let email = email.map_or_else(|| "-".to_owned(), |e| e.masked());
                let (name, role, kind, created) = (&s.name, s.role, s.kind.as_str(), fmt(s.created_at));
                writeln!(
                    out,
                    "{name:<24} {role:<10} {kind:<8} {agent:<12} {phone:<18} {email:<24} {created:<20} {disabled}"
                )?;
            }
        }
        SupervisorsCommand::SetAgent { name, agent_id } => {
            let agent = match agent_id.as_str() {
                "none" => None,
                id => Some(id.parse::<crate::domain::AgentId>().map_err(anyhow::Error::msg)?),
            };
            set_agent(stores, key, &name, agent.as_ref(), now).await?;
            match &agent {
                Some(agent) => writeln!(out, "{name}: agent id {agent}")?,
                None => writeln!(out, "{name}: no agent id")?,
            }
        }
        SupervisorsCommand::SetContact { name, phone, email } => {
            let phone = match phone.as_deref() {
                None => None,
                Some("none") => Some(None),
                Some(p) => Some(Some(contact_phone(p, allowed)?)),
            };
            let email = match email.as_deref() {
                None => None,
                Some("none") => Some(None),
                Some(e) => Some(Some(e.parse::<crate::domain::EmailAddress>().map_err(anyhow::Error::msg)?)),
            };
            if phone.is_none() && email.is_none() {
                anyhow::bail!("give --phone, --email or both");
            }
            let (p, e) = (phone.as_ref().map(Option::as_ref), email.as_ref().map(Option::as_ref));
            set_contact(stores, key, &name, p, e, now).await?;
            writeln!(out, "{name}: contact set")?;
        }
        SupervisorsCommand::PasskeyCode { name, valid } => {
            let valid = chrono::TimeDelta::from_std(*valid).map_err(|_| anyhow::anyhow!("--valid is too long"))?;
            if valid > chrono::TimeDelta::days(7) || valid < chrono::TimeDelta::minutes(1) {
                anyhow::bail!("--valid must be between 1m and 7d");
            }
            let listed = stores.supervision.list_supervisors().await?;
            let Some(person) = listed.iter().find(|s| s.name == name.as_str()) else {
                anyhow::bail!("no supervisor named `{name}`");
            };
            if person.disabled_at.is_some() || person.kind != crate::domain::TokenKind::Person {
                anyhow::bail!("`{name}` is disabled or a service token: no passkey for them");
            }
            let id = uuid::Uuid::now_v7();
            let code = crate::signin::generate_enrolment_code(id);
            let expires_at = now + valid;
            let detail = format!(
                "passkey enrolment code for {name}, valid until {}",
                expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
            let event = NewAuditEvent::by_operator(AuditAction::PasskeyEnrolmentCodeIssued, now, detail);
            trace(&stores.supervision.append_audit(event, key).await?);
            let challenge = crate::store::signin::NewChallenge {
                id,
                supervisor: name.as_str().to_owned(),
                kind: crate::store::signin::ChallengeKind::EnrolmentCode,
                secret_hash: Some(token::hash(code.expose_secret())),
                state: None,
                created_at: now,
                expires_at,
            };
            stores.sign_in.start_challenge(challenge, None).await?;
            // The code alone on stdout, shown only now; hand it to the person by a channel you trust.
            writeln!(out, "{}", code.expose_secret())?;
        }
        SupervisorsCommand::LiftLock { name, address } => {
            let subject = match (&name, address) {
                (Some(name), _) => crate::store::signin::person_subject(name.as_str()),
                (None, Some(address)) => crate::store::signin::address_subject(address),
                (None, None) => anyhow::bail!("give a name or --address"),
            };
            let event = NewAuditEvent::by_operator(
                AuditAction::SignInLockLifted,
                now,
                format!("sign-in lock of {subject} lifted"),
            );
            let (was_locked, event) = stores.sign_in.lift_sign_in_lock(&subject, now, event, key).await?;
            trace(&event);
            writeln!(out, "{subject}: {}", if was_locked { "lock lifted" } else { "was not locked" })?;
        }
        SupervisorsCommand::Disable { name } => {
            let event = NewAuditEvent::by_operator(AuditAction::SupervisorDisabled, now, format!("disabled {name}"));
            let Some(event) = stores.supervision.disable_supervisor(&name, now, event, key).await? else {
                anyhow::bail!("no supervisor named `{name}`");
            };
            trace(&event);
            writeln!(out, "disabled {name}")?;
        }
    }
    Ok(())
}

/// A supervisor's own mobile number, as the allowed countries read it.
fn contact_phone(input: &str, allowed: &crate::domain::AllowedCountries) -> anyhow::Result<crate::domain::PhoneNumber> {
    crate::domain::PhoneNumber::parse(input, allowed).map_err(|e| anyhow::anyhow!("--phone `{input}`: {e}"))
}

/// Sets a supervisor's contact for sign-in codes, audited (the values masked in the event).
async fn set_contact(
    stores: &Stores,
    key: &AuditKey,
    name: &crate::domain::SupervisorName,
    phone: Option<Option<&crate::domain::PhoneNumber>>,
    email: Option<Option<&crate::domain::EmailAddress>>,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<()> {
    let shown = |value: Option<Option<String>>| match value {
        None => "unchanged".to_owned(),
        Some(None) => "cleared".to_owned(),
        Some(Some(v)) => v,
    };
    let phone_shown = shown(phone.map(|p| p.map(|p| p.masked().to_owned())));
    let email_shown = shown(email.map(|e| e.map(crate::domain::EmailAddress::masked)));
    let detail = format!("sign-in contact of {name}: phone {phone_shown}, e-mail {email_shown}");
    let event = NewAuditEvent::by_operator(AuditAction::SupervisorContactSet, now, detail);
    let (phone, email) = (phone.map(|p| p.map(|p| p.e164())), email.map(|e| e.map(|e| e.as_str())));
    let Some(event) = stores.sign_in.set_contact(name, phone, email, event, key).await? else {
        anyhow::bail!("no supervisor named `{name}`");
    };
    trace(&event);
    Ok(())
}

/// Sets (or clears) a supervisor's agent id, audited.
async fn set_agent(
    stores: &Stores,
    key: &AuditKey,
    name: &crate::domain::SupervisorName,
    agent: Option<&crate::domain::AgentId>,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<()> {
    let detail = match agent {
        Some(agent) => format!("agent id of {name} set to {agent}"),
        None => format!("agent id of {name} cleared"),
    };
    let event = NewAuditEvent::by_operator(AuditAction::SupervisorAgentSet, now, detail);
    match stores.supervision.set_agent(name, agent, event, key).await? {
        crate::store::AgentChange::Set(event) => {
            trace(&event);
            Ok(())
        }
        crate::store::AgentChange::NoSuchSupervisor => anyhow::bail!("no supervisor named `{name}`"),
        crate::store::AgentChange::Taken { by } => {
            anyhow::bail!("agent id {} already belongs to `{by}`", agent.map(|a| a.as_str()).unwrap_or_default())
        }
    }
}

/// Reads the chain page by page and checks every link and seal, and that it reaches every expected head.
async fn verify_audit(stores: &Stores, key: AuditKey, expect: Expectations) -> anyhow::Result<()> {
    const PAGE: u32 = 1000;
    let mut verifier = ChainVerifier::new(key, expect);
    let broken = |broken| anyhow::anyhow!("audit chain broken at {broken}");
    loop {
        let page = stores.supervision.audit_chain(verifier.checked(), PAGE).await?;
        for event in &page {
            verifier.check(event).map_err(broken)?;
        }
        if page.len() < PAGE as usize {
            break;
        }
    }
    verifier.finish().map_err(broken)?;
    let (checked, unkeyed) = (verifier.checked(), verifier.unkeyed());
    print!("audit chain intact: {checked} events, head {checked}:{}", verifier.head());
    if unkeyed > 0 {
        print!(" ({unkeyed} leading events sealed without a key, accepted as written before keyed chains)");
    }
    println!();
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT stops otpd");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
