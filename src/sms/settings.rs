//! The delivery settings: the message template and each provider's credentials, as flags and `OTPD_*`
//! variables, checked at start-up into a [`DeliveryConfig`]. Secrets come from a variable or a file (the file
//! form keeps them out of the process environment) and are held as [`SecretString`], never logged.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use secrecy::SecretString;

use super::template::{DEFAULT_TEMPLATE, SmsTemplate, TemplateLimits};
use super::{GatewayConfig, HttpGateway, HttpOptions, NhnAlimTalk, SmsGateway};
use crate::clock::Clock;
use crate::domain::{DeliveryChannel, DeliveryRoute, DeliveryRoutes, RouteProvider};

/// The message template and the providers' credentials, as given.
#[derive(Debug, Clone, Args)]
pub struct DeliverySettings {
    /// The SMS text: `{code}` exactly once, `{minutes}` (the code's lifetime) and `{brand}`; `\n` is a line
    /// break. Checked at
    /// start-up with the longest code: EUC-KR only (for solapi EUC-KR 완성형, KS X 1001), at most 90 bytes with
    /// the app-hash and origin lines unless --allow-lms, and for nhn-sms one of NHN's authentication words (auth,
    /// password, verify, にんしょう, 認証, 비밀번호, 인증).
    #[arg(long, env = "OTPD_SMS_TEMPLATE", default_value = DEFAULT_TEMPLATE, global = true)]
    pub sms_template: String,
    /// What `{brand}` stands for in the template, e.g. 카카오T.
    #[arg(long, env = "OTPD_BRAND", default_value = "", global = true)]
    pub brand: String,
    /// Let the text exceed one SMS (90 bytes) and go out as LMS (up to 2,000 bytes, billed higher). Refused with
    /// nhn-sms: NHN's authentication API sends SMS only.
    #[arg(long, env = "OTPD_ALLOW_LMS", default_value_t = false, action = clap::ArgAction::Set, global = true)]
    pub allow_lms: bool,
    /// Append `@DOMAIN #CODE` as the last line, so iOS and the Web OTP API offer the code only to that domain's
    /// app or site. Default: no such line.
    #[arg(long, env = "OTPD_ORIGIN_DOMAIN", global = true)]
    pub origin_domain: Option<String>,
    /// NHN Cloud SMS app key (nhn-sms).
    #[arg(long, env = "OTPD_NHN_SMS_APP_KEY", hide_env_values = true, global = true)]
    pub nhn_sms_app_key: Option<String>,
    /// NHN Cloud SMS secret key (nhn-sms); prefer --nhn-sms-secret-key-file.
    #[arg(long, env = "OTPD_NHN_SMS_SECRET_KEY", hide_env_values = true, global = true)]
    pub nhn_sms_secret_key: Option<SecretString>,
    /// File holding the NHN Cloud SMS secret key.
    #[arg(long, env = "OTPD_NHN_SMS_SECRET_KEY_FILE", global = true)]
    pub nhn_sms_secret_key_file: Option<PathBuf>,
    /// Naver Cloud SENS SMS service id (sens).
    #[arg(long, env = "OTPD_SENS_SERVICE_ID", global = true)]
    pub sens_service_id: Option<String>,
    /// Naver Cloud access key id (sens).
    #[arg(long, env = "OTPD_SENS_ACCESS_KEY", hide_env_values = true, global = true)]
    pub sens_access_key: Option<String>,
    /// Naver Cloud secret key (sens); prefer --sens-secret-key-file.
    #[arg(long, env = "OTPD_SENS_SECRET_KEY", hide_env_values = true, global = true)]
    pub sens_secret_key: Option<SecretString>,
    /// File holding the Naver Cloud secret key.
    #[arg(long, env = "OTPD_SENS_SECRET_KEY_FILE", global = true)]
    pub sens_secret_key_file: Option<PathBuf>,
    /// Solapi API key (solapi).
    #[arg(long, env = "OTPD_SOLAPI_API_KEY", hide_env_values = true, global = true)]
    pub solapi_api_key: Option<String>,
    /// Solapi API secret (solapi); prefer --solapi-api-secret-file.
    #[arg(long, env = "OTPD_SOLAPI_API_SECRET", hide_env_values = true, global = true)]
    pub solapi_api_secret: Option<SecretString>,
    /// File holding the Solapi API secret.
    #[arg(long, env = "OTPD_SOLAPI_API_SECRET_FILE", global = true)]
    pub solapi_api_secret_file: Option<PathBuf>,
    /// The routes a code is offered to, in order, each a channel on a provider (`alimtalk@nhn,sms@nhn,sms@sens`;
    /// `sms` alone is the --sms-gateway, `alimtalk` is alimtalk@nhn): the next one is tried when one refuses or
    /// fails, within the caller's deadline. Each has its own circuit breaker.
    #[arg(long, env = "OTPD_DELIVERY", default_value = "sms", global = true)]
    pub delivery: DeliveryRoutes,
    /// The base URL of route sms@nhn when --sms-gateway is not nhn-sms (default: NHN Cloud's).
    #[arg(long, env = "OTPD_NHN_SMS_URL", global = true)]
    pub nhn_sms_url: Option<String>,
    /// The base URL of route sms@sens when --sms-gateway is not sens (default: Naver Cloud's).
    #[arg(long, env = "OTPD_SENS_URL", global = true)]
    pub sens_url: Option<String>,
    /// The base URL of route sms@solapi when --sms-gateway is not solapi (default: Solapi's).
    #[arg(long, env = "OTPD_SOLAPI_URL", global = true)]
    pub solapi_url: Option<String>,
    /// How long a number remembers that a route failed for it (a failed receipt: blocked as spam,
    /// undeliverable; or a refusal): its next codes start with the routes that did not fail. Codes (and so
    /// their attempts) are kept at least this long.
    #[arg(long, env = "OTPD_ROUTE_MEMORY", default_value = "7d", global = true)]
    pub route_memory: humantime::Duration,
    /// How long a route that accepted a code may take to report its receipt before the number's next send
    /// starts with another route.
    #[arg(long, env = "OTPD_RECEIPT_WAIT", default_value = "30s", global = true)]
    pub receipt_wait: humantime::Duration,
    /// The AlimTalk provider: `nhn-alimtalk` (NHN Cloud KakaoTalk Bizmessage) or `nhn-alimtalk:BASE_URL`.
    #[arg(long, env = "OTPD_ALIMTALK_GATEWAY", default_value = "nhn-alimtalk", global = true)]
    pub alimtalk_gateway: String,
    /// NHN Cloud Bizmessage app key.
    #[arg(long, env = "OTPD_ALIMTALK_APP_KEY", hide_env_values = true, global = true)]
    pub alimtalk_app_key: Option<String>,
    /// NHN Cloud Bizmessage secret key; prefer --alimtalk-secret-key-file.
    #[arg(long, env = "OTPD_ALIMTALK_SECRET_KEY", hide_env_values = true, global = true)]
    pub alimtalk_secret_key: Option<SecretString>,
    /// File holding the NHN Cloud Bizmessage secret key.
    #[arg(long, env = "OTPD_ALIMTALK_SECRET_KEY_FILE", global = true)]
    pub alimtalk_secret_key_file: Option<PathBuf>,
    /// The KakaoTalk channel's sender key.
    #[arg(long, env = "OTPD_ALIMTALK_SENDER_KEY", hide_env_values = true, global = true)]
    pub alimtalk_sender_key: Option<String>,
    /// The approved authentication template's code; the template takes the code as its `code` parameter.
    #[arg(long, env = "OTPD_ALIMTALK_TEMPLATE_CODE", global = true)]
    pub alimtalk_template_code: Option<String>,
    /// The approved template of the lookup notice: its text is the notice's, with the brand and support number
    /// written in (no parameters). Required while `alimtalk` is in --delivery and the notice is on, so that the
    /// notice goes AlimTalk first, then SMS, as codes do.
    #[arg(long, env = "OTPD_ALIMTALK_NOTICE_TEMPLATE_CODE", global = true)]
    pub alimtalk_notice_template_code: Option<String>,
    /// Where providers report delivery receipts (HTTP: POST /receipts/nhn, /receipts/http). Default: off, and
    /// the status view says "not reported".
    #[arg(long, env = "OTPD_WEBHOOK_LISTEN", global = true)]
    pub webhook_listen: Option<std::net::SocketAddr>,
    /// How often the providers without webhooks (sens, solapi) are asked for the results of sends that have no
    /// receipt yet; 0s: never (the status view then says "not reported").
    #[arg(long, env = "OTPD_RECEIPT_POLL_INTERVAL", default_value = "10s", global = true)]
    pub receipt_poll_interval: humantime::Duration,
    /// The signature entered when the NHN Cloud SMS webhook was configured (sent back in
    /// X-Toast-Webhook-Signature); enables /receipts/nhn. Prefer --nhn-webhook-signature-file.
    #[arg(long, env = "OTPD_NHN_WEBHOOK_SIGNATURE", hide_env_values = true, global = true)]
    pub nhn_webhook_signature: Option<SecretString>,
    /// File holding the NHN webhook signature.
    #[arg(long, env = "OTPD_NHN_WEBHOOK_SIGNATURE_FILE", global = true)]
    pub nhn_webhook_signature_file: Option<PathBuf>,
    /// The HMAC key of generic receipts (X-Otpd-Signature, docs/sms-gateway.md); enables /receipts/http. Prefer
    /// --receipt-hmac-key-file.
    #[arg(long, env = "OTPD_RECEIPT_HMAC_KEY", hide_env_values = true, global = true)]
    pub receipt_hmac_key: Option<SecretString>,
    /// File holding the generic receipts' HMAC key.
    #[arg(long, env = "OTPD_RECEIPT_HMAC_KEY_FILE", global = true)]
    pub receipt_hmac_key_file: Option<PathBuf>,
    /// The HMAC key the call centre's phone system signs call events with (X-Otpd-Signature, docs/cti.md);
    /// enables POST /calls/events on the webhook listener. Prefer --call-events-key-file.
    #[arg(long, env = "OTPD_CALL_EVENTS_KEY", hide_env_values = true, global = true)]
    pub call_events_key: Option<SecretString>,
    /// File holding the call events' HMAC key.
    #[arg(long, env = "OTPD_CALL_EVENTS_KEY_FILE", global = true)]
    pub call_events_key_file: Option<PathBuf>,
}

/// The checked delivery settings.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// The message template.
    pub template: SmsTemplate,
    /// The credentials the configured gateways need.
    pub credentials: Credentials,
    /// The routes, in order, each with the gateway it uses: None for the `--sms-gateway` one.
    pub routes: Vec<(DeliveryRoute, Option<GatewayConfig>)>,
    /// How long a route that failed for a number is tried after the others.
    pub route_memory: chrono::TimeDelta,
    /// How long an accepted code may wait for its receipt before the next send starts elsewhere.
    pub receipt_wait: chrono::TimeDelta,
    /// The AlimTalk gateway, when `alimtalk` is a channel.
    pub alimtalk: Option<AlimTalkConfig>,
    /// Where delivery receipts are received; None: receipts off.
    pub webhook_listen: Option<std::net::SocketAddr>,
    /// The receipt endpoints' secrets.
    pub receipt_keys: crate::receipts::ReceiptKeys,
    /// How often providers without webhooks are polled for results; zero: never.
    pub receipt_poll_interval: std::time::Duration,
}

/// Where and as whom AlimTalk messages are sent.
#[derive(Debug, Clone)]
pub struct AlimTalkConfig {
    /// The Bizmessage API's base URL.
    pub base: reqwest::Url,
    /// App key.
    pub app_key: String,
    /// Secret key.
    pub secret_key: SecretString,
    /// The KakaoTalk channel's sender key.
    pub sender_key: String,
    /// The approved template.
    pub template_code: String,
    /// The approved template of the lookup notice (its text, no parameters); None: notices go by SMS only.
    pub notice_template_code: Option<String>,
}

impl DeliveryConfig {
    /// Whether a route uses the `--sms-gateway` gateway (else it is built but carries nothing).
    pub fn uses_sms_gateway(&self) -> bool {
        self.routes.iter().any(|(route, own)| route.channel == DeliveryChannel::Sms && own.is_none())
    }

    /// What polls for the results of every route's provider that posts none (SENS, Solapi), one per provider.
    pub fn result_queries(&self, sms: &GatewayConfig) -> Vec<Arc<dyn crate::receipts::ResultQuery>> {
        let gateways = std::iter::once(sms).filter(|_| self.uses_sms_gateway());
        let own = self
            .routes
            .iter()
            .filter_map(|(route, own)| own.as_ref().filter(|_| route.channel == DeliveryChannel::Sms));
        let mut queries: Vec<Arc<dyn crate::receipts::ResultQuery>> = Vec::new();
        for query in gateways.chain(own).filter_map(|gateway| gateway.result_query(&self.credentials)) {
            if !queries.iter().any(|q| q.gateway() == query.gateway()) {
                queries.push(query);
            }
        }
        queries
    }

    /// The provider URLs of the routes' own gateways (AlimTalk's included), with the setting that gives each, for
    /// the prod-mode transport check.
    pub fn route_urls(&self) -> Vec<(&'static str, &reqwest::Url)> {
        let own = self.routes.iter().filter_map(|(_, own)| own.as_ref()).filter_map(|gateway| {
            let setting = match gateway {
                GatewayConfig::NhnSms(_) => "nhn-sms-url",
                GatewayConfig::Sens(_) => "sens-url",
                _ => "solapi-url",
            };
            gateway.url().map(|url| (setting, url))
        });
        own.chain(self.alimtalk.as_ref().map(|a| ("alimtalk-gateway", &a.base))).collect()
    }

    /// The gateway of each route, in order: `sms` is the `--sms-gateway` one, and so is `sms@P` when that is
    /// provider P's; any other `sms@P` is its own HTTP gateway, and `alimtalk@nhn` its own (each with its own
    /// breaker and connection limit), with the same retry settings.
    pub async fn channels(
        &self,
        sms: Arc<dyn SmsGateway>,
        http: &HttpOptions,
        clock: Arc<dyn Clock>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<super::Channels, String> {
        let mut channels = Vec::new();
        for (route, own) in &self.routes {
            let gateway: Arc<dyn SmsGateway> = match (route.channel, own, &self.alimtalk) {
                (DeliveryChannel::Sms, None, _) => Arc::clone(&sms),
                (DeliveryChannel::Sms, Some(own), _) => own
                    .build(http, &self.credentials, Arc::clone(&clock), Arc::clone(&metrics))
                    .await
                    .map_err(|e| format!("{route}: {e}"))?,
                (DeliveryChannel::AlimTalk, _, Some(a)) => {
                    let wire = NhnAlimTalk::new(
                        a.base.clone(),
                        a.app_key.clone(),
                        a.secret_key.clone(),
                        a.sender_key.clone(),
                        a.template_code.clone(),
                    )
                    .with_notice_template(a.notice_template_code.clone());
                    Arc::new(HttpGateway::with_wire(Box::new(wire), http.clone(), Arc::clone(&clock))?)
                }
                (DeliveryChannel::AlimTalk, _, None) => return Err("alimtalk is not configured".into()),
            };
            channels.push((route.channel, gateway));
        }
        Ok(channels)
    }
}

/// Provider credentials, each present when its gateway is configured.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// nhn-sms: app key and secret key.
    pub nhn_sms: Option<(String, SecretString)>,
    /// sens: service id, access key and secret key.
    pub sens: Option<(String, String, SecretString)>,
    /// solapi: API key and secret.
    pub solapi: Option<(String, SecretString)>,
}

/// A setting is invalid: its name, and why.
pub type SettingError = (&'static str, String);

/// What the template check needs from the other settings.
#[derive(Debug, Clone, Copy)]
pub struct TemplateContext {
    /// Digits per code.
    pub code_digits: u8,
    /// Code lifetime.
    pub ttl: chrono::TimeDelta,
    /// Whether any app hash may be asked for.
    pub app_hashes: bool,
}

impl DeliverySettings {
    /// Checks the template against the SMS gateway and reads the credentials that gateway needs.
    pub fn validate(&self, sms: &GatewayConfig, context: TemplateContext) -> Result<DeliveryConfig, SettingError> {
        let limits = TemplateLimits {
            code_digits: context.code_digits,
            ttl: context.ttl,
            app_hash_line: context.app_hashes,
            allow_lms: self.allow_lms,
            needs_auth_word: false,
            ks_x_1001_only: false,
        };
        let routes = self.routes(sms)?;
        // Codes (and their attempts) are kept as long as the memory: bounded, so the tables stay bounded too.
        if *self.route_memory > std::time::Duration::from_secs(30 * 86_400) {
            return Err(("route-memory", "at most 30d: codes and their delivery attempts are kept this long".into()));
        }
        if *self.receipt_wait > std::time::Duration::from_secs(3600) {
            return Err(("receipt-wait", "at most 1h".into()));
        }
        let in_use: Vec<&GatewayConfig> = routes
            .iter()
            .filter(|(route, _)| route.channel == DeliveryChannel::Sms)
            .map(|(_, own)| own.as_ref().unwrap_or(sms))
            .collect();
        // NHN's authentication SMS API refuses a text without an authentication word: any route through it.
        let needs_auth_word = in_use.iter().any(|g| matches!(g, GatewayConfig::NhnSms(_)));
        // Solapi takes only EUC-KR 완성형 (KS X 1001): any route through it.
        let ks_x_1001_only = in_use.iter().any(|g| matches!(g, GatewayConfig::Solapi(_)));
        let limits = TemplateLimits { needs_auth_word, ks_x_1001_only, ..limits };
        if self.allow_lms && in_use.iter().any(|g| matches!(g, GatewayConfig::NhnSms(_))) {
            // The authentication API (/sender/auth/sms) sends an SMS: 90 bytes is the standard, and text past it
            // "may be cut" (SMS API v3.0 Guide, 주의 사항). LMS is another API, not an authentication one.
            return Err((
                "allow-lms",
                "nhn-sms sends through NHN's authentication SMS API, which sends SMS only (90 bytes; longer text \
                 may be cut): shorten --sms-template instead"
                    .into(),
            ));
        }
        if let Some(domain) = &self.origin_domain {
            SmsTemplate::new("{code}", "", Some(domain), TemplateLimits { needs_auth_word: false, ..limits })
                .map_err(|m| ("origin-domain", m))?;
        }
        let template = SmsTemplate::new(&self.sms_template, &self.brand, self.origin_domain.as_deref(), limits)
            .map_err(|m| ("sms-template", m))?;
        let mut credentials = Credentials::default();
        for gateway in in_use {
            self.credentials_for(gateway, &mut credentials)?;
        }
        let alimtalk = if self.delivery.contains(DeliveryChannel::AlimTalk) { Some(self.alimtalk()?) } else { None };
        let receipt_keys = crate::receipts::ReceiptKeys {
            nhn_signature: optional_secret(
                ("nhn-webhook-signature", &self.nhn_webhook_signature),
                ("nhn-webhook-signature-file", &self.nhn_webhook_signature_file),
            )?,
            hmac_key: optional_secret(
                ("receipt-hmac-key", &self.receipt_hmac_key),
                ("receipt-hmac-key-file", &self.receipt_hmac_key_file),
            )?,
            call_events_key: optional_secret(
                ("call-events-key", &self.call_events_key),
                ("call-events-key-file", &self.call_events_key_file),
            )?,
            alimtalk: alimtalk.as_ref().map(|a| crate::receipts::AlimTalkQuery {
                base: a.base.clone(),
                app_key: a.app_key.clone(),
                secret_key: a.secret_key.clone(),
            }),
        };
        if self.webhook_listen.is_some()
            && receipt_keys.nhn_signature.is_none()
            && receipt_keys.hmac_key.is_none()
            && receipt_keys.call_events_key.is_none()
        {
            return Err((
                "webhook-listen",
                "needs --nhn-webhook-signature, --receipt-hmac-key or --call-events-key: nothing is taken \
                 unauthenticated"
                    .into(),
            ));
        }
        for (setting, key) in
            [("receipt-hmac-key", &receipt_keys.hmac_key), ("call-events-key", &receipt_keys.call_events_key)]
        {
            use secrecy::ExposeSecret;
            if key.as_ref().is_some_and(|key| key.expose_secret().len() < 16) {
                return Err((setting, "must be at least 16 characters".into()));
            }
        }
        Ok(DeliveryConfig {
            template,
            credentials,
            routes,
            route_memory: chrono::TimeDelta::from_std(*self.route_memory)
                .map_err(|_| ("route-memory", "is too long".to_owned()))?,
            receipt_wait: chrono::TimeDelta::from_std(*self.receipt_wait)
                .map_err(|_| ("receipt-wait", "is too long".to_owned()))?,
            alimtalk,
            webhook_listen: self.webhook_listen,
            receipt_keys,
            receipt_poll_interval: *self.receipt_poll_interval,
        })
    }

    /// Reads the credentials `gateway` needs into `credentials`.
    fn credentials_for(&self, gateway: &GatewayConfig, credentials: &mut Credentials) -> Result<(), SettingError> {
        match gateway {
            GatewayConfig::NhnSms(_) => {
                let app_key = required("nhn-sms-app-key", &self.nhn_sms_app_key)?;
                let secret = secret(
                    ("nhn-sms-secret-key", &self.nhn_sms_secret_key),
                    ("nhn-sms-secret-key-file", &self.nhn_sms_secret_key_file),
                )?;
                credentials.nhn_sms = Some((app_key, secret));
            }
            GatewayConfig::Sens(_) => {
                let service_id = required("sens-service-id", &self.sens_service_id)?;
                let access_key = required("sens-access-key", &self.sens_access_key)?;
                let secret = secret(
                    ("sens-secret-key", &self.sens_secret_key),
                    ("sens-secret-key-file", &self.sens_secret_key_file),
                )?;
                credentials.sens = Some((service_id, access_key, secret));
            }
            GatewayConfig::Solapi(_) => {
                let api_key = required("solapi-api-key", &self.solapi_api_key)?;
                let secret = secret(
                    ("solapi-api-secret", &self.solapi_api_secret),
                    ("solapi-api-secret-file", &self.solapi_api_secret_file),
                )?;
                credentials.solapi = Some((api_key, secret));
            }
            GatewayConfig::Log | GatewayConfig::File(_) | GatewayConfig::Http(_) => {}
        }
        Ok(())
    }

    /// Each route of `--delivery` with the gateway it uses: None for the `--sms-gateway` one (`sms`, or `sms@P`
    /// when `--sms-gateway` is provider P's), else provider P at `--P-url` (default: its public API).
    fn routes(&self, sms: &GatewayConfig) -> Result<Vec<(DeliveryRoute, Option<GatewayConfig>)>, SettingError> {
        let mut routes = Vec::new();
        for route in self.delivery.iter() {
            let own = match (route.channel, route.provider) {
                (DeliveryChannel::AlimTalk, _) | (DeliveryChannel::Sms, RouteProvider::SmsGateway) => None,
                (DeliveryChannel::Sms, provider) => {
                    let (name, setting, url) = match provider {
                        RouteProvider::Sens => ("sens", "sens-url", &self.sens_url),
                        RouteProvider::Solapi => ("solapi", "solapi-url", &self.solapi_url),
                        RouteProvider::Nhn | RouteProvider::SmsGateway => ("nhn-sms", "nhn-sms-url", &self.nhn_sms_url),
                    };
                    let spec = match url {
                        Some(url) => format!("{name}:{}", url.trim()),
                        None => name.to_owned(),
                    };
                    let gateway: GatewayConfig = spec.parse().map_err(|m| (setting, m))?;
                    let same_provider = std::mem::discriminant(&gateway) == std::mem::discriminant(sms);
                    match (same_provider, url) {
                        (true, None) => None,
                        (true, Some(_)) if gateway == *sms => None,
                        (true, Some(_)) => {
                            return Err((setting, format!("--sms-gateway is {name} already: give its URL once")));
                        }
                        (false, _) => Some(gateway),
                    }
                }
            };
            if own.is_none()
                && route.channel == DeliveryChannel::Sms
                && routes.iter().any(|(r, o): &(DeliveryRoute, Option<GatewayConfig>)| {
                    r.channel == DeliveryChannel::Sms && o.is_none()
                })
            {
                return Err(("delivery", format!("`{route}` is the --sms-gateway route, listed twice")));
            }
            routes.push((route, own));
        }
        Ok(routes)
    }

    fn alimtalk(&self) -> Result<AlimTalkConfig, SettingError> {
        let spec = self.alimtalk_gateway.trim();
        let base = match spec.strip_prefix("nhn-alimtalk") {
            Some("") => super::NHN_ALIMTALK_BASE,
            Some(rest) => rest.strip_prefix(':').unwrap_or("?"),
            None => "?",
        };
        let base = reqwest::Url::parse(base)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .ok_or_else(|| ("alimtalk-gateway", format!("`{spec}` is not nhn-alimtalk or nhn-alimtalk:BASE_URL")))?;
        Ok(AlimTalkConfig {
            base,
            app_key: required("alimtalk-app-key", &self.alimtalk_app_key)?,
            secret_key: secret(
                ("alimtalk-secret-key", &self.alimtalk_secret_key),
                ("alimtalk-secret-key-file", &self.alimtalk_secret_key_file),
            )?,
            sender_key: required("alimtalk-sender-key", &self.alimtalk_sender_key)?,
            template_code: required("alimtalk-template-code", &self.alimtalk_template_code)?,
            notice_template_code: match &self.alimtalk_notice_template_code {
                Some(_) => Some(required("alimtalk-notice-template-code", &self.alimtalk_notice_template_code)?),
                None => None,
            },
        })
    }
}

/// A plain setting the gateway cannot work without.
fn required(setting: &'static str, value: &Option<String>) -> Result<String, SettingError> {
    match value.as_deref().map(str::trim) {
        Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_graphic()) => Ok(v.to_owned()),
        Some(_) => Err((setting, "must be printable ASCII without spaces".into())),
        None => Err((setting, "is required by the configured SMS gateway".into())),
    }
}

/// A secret that may be left out: None when neither form is given.
pub fn optional_secret(
    inline: (&'static str, &Option<SecretString>),
    file: (&'static str, &Option<PathBuf>),
) -> Result<Option<SecretString>, SettingError> {
    (inline.1.is_some() || file.1.is_some()).then(|| secret(inline, file)).transpose()
}

/// An HTTP header value kept secret (`Bearer KEY`: spaces allowed), given inline, in a file, or not at all.
pub fn optional_header_secret(
    inline: (&'static str, &Option<SecretString>),
    file: (&'static str, &Option<PathBuf>),
) -> Result<Option<SecretString>, SettingError> {
    let header_value = |v: &str| v.bytes().all(|b| b == b' ' || b.is_ascii_graphic());
    let problem = "must be printable ASCII (an HTTP header value)";
    (inline.1.is_some() || file.1.is_some()).then(|| secret_checked(inline, file, header_value, problem)).transpose()
}

/// A secret given inline or in a file (exactly one of them); the file's trailing newline is not part of it.
pub fn secret(
    inline: (&'static str, &Option<SecretString>),
    file: (&'static str, &Option<PathBuf>),
) -> Result<SecretString, SettingError> {
    let token = |v: &str| v.bytes().all(|b| b.is_ascii_graphic());
    secret_checked(inline, file, token, "must be printable ASCII without spaces")
}

/// A secret given inline or in a file, which `valid` accepts; else `problem`, never the value.
fn secret_checked(
    (inline_name, inline): (&'static str, &Option<SecretString>),
    (file_name, file): (&'static str, &Option<PathBuf>),
    valid: impl Fn(&str) -> bool,
    problem: &str,
) -> Result<SecretString, SettingError> {
    use secrecy::ExposeSecret;
    let value = match (inline, file) {
        (Some(_), Some(_)) => return Err((inline_name, format!("give --{inline_name} or --{file_name}, not both"))),
        (Some(value), None) => value.expose_secret().trim().to_owned(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| (file_name, format!("cannot read {}: {e}", path.display())))?
            .trim()
            .to_owned(),
        (None, None) => {
            return Err((inline_name, format!("is required by the configured gateway (or --{file_name})")));
        }
    };
    if value.is_empty() || !valid(&value) {
        // Never echo the value: say only what is wrong with it.
        return Err((inline_name, problem.to_owned()));
    }
    Ok(SecretString::from(value))
}
