//! The arms over HTTP: one client per arm implementing the same trait as the in-process arm,
//! so the orchestrator does not know which it talks to.
//!
//! Each arm may have several instances. Calls go round-robin over the instances whose
//! circuit breaker is closed; a transport failure, a timeout, a 503/504 or any error the arm
//! marks retryable trips a failure on that instance and the call moves on to the next one
//! (each instance at most once per call). After [`BreakerSettings::failures`] failures in a
//! row an instance's breaker opens for [`BreakerSettings::cool_down`]; then the next call
//! tries it first (half-open): a success closes it, a failure opens it again and the call
//! goes on to a healthy instance, and only one call at a time probes it. Every call has a
//! timeout: the configured one, or less when the task's deadline is nearer.
//!
//! Instances come from configuration (static, for the life of the process) and from the
//! arm registry ([`ArmClient::set_registered`], refreshed by the orchestrator);
//! [`ArmClient::poll_health`] asks each instance's `/ready` between calls, so a dead
//! instance is skipped before a task's call finds it dead and a recovered one is probed.

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use octollm_arms::{
    ArmError, ArmOutcome, ArmStatus, Arms, CallContext, Handler, Health, Operation,
    OperationVisitor,
};
use octollm_core::ArmKind;
use octollm_core::budget::Usage;
use octollm_core::token::{ExecutorGrant, TokenSigner};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::arm_service::{
    MODEL, STEP_ID, TASK_ID, USAGE_COMPLETION, USAGE_COST, USAGE_PROMPT, budget_headers,
};
use crate::error::{ErrorBody, arm_error};

#[derive(Debug, Clone, Copy)]
pub struct BreakerSettings {
    /// Failures in a row that open an instance's breaker.
    pub failures: u32,
    /// How long an open breaker keeps calls away.
    pub cool_down: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            failures: 3,
            cool_down: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    /// The cool-down is over: the next call may try the instance.
    HalfOpen,
}

impl BreakerState {
    /// The value of the `octollm_arm_instance_breaker_state` gauge.
    fn gauge(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
    /// A call is probing the half-open instance until then (a probe that never reports back,
    /// its call dropped, frees the slot when this passes).
    probing_until: Option<Instant>,
}

/// Where an instance came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Configured,
    Registered,
}

#[derive(Debug)]
struct Instance {
    arm: ArmKind,
    base: String,
    origin: Origin,
    breaker: Mutex<Breaker>,
}

impl Instance {
    fn new(arm: ArmKind, base: &str, origin: Origin) -> Arc<Self> {
        let instance = Arc::new(Instance {
            arm,
            base: base.trim_end_matches('/').to_owned(),
            origin,
            breaker: Mutex::new(Breaker {
                failures: 0,
                open_until: None,
                probing_until: None,
            }),
        });
        instance.report(BreakerState::Closed);
        instance
    }

    fn state(&self, now: Instant) -> BreakerState {
        let Ok(b) = self.breaker.lock() else {
            return BreakerState::Closed;
        };
        Self::state_of(&b, now)
    }

    fn state_of(b: &Breaker, now: Instant) -> BreakerState {
        match b.open_until {
            None => BreakerState::Closed,
            Some(until) if now < until => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }

    fn report(&self, state: BreakerState) {
        metrics::gauge!(
            "octollm_arm_instance_breaker_state",
            "arm" => self.arm.id(),
            "instance" => self.base.clone()
        )
        .set(state.gauge());
    }

    /// Takes the half-open instance's single probe slot for one call; false when the
    /// instance is not half-open or another call is probing it.
    fn claim_probe(&self, now: Instant, hold: Duration) -> bool {
        let Ok(mut b) = self.breaker.lock() else {
            return false;
        };
        if Self::state_of(&b, now) != BreakerState::HalfOpen
            || b.probing_until.is_some_and(|until| now < until)
        {
            return false;
        }
        b.probing_until = Some(now + hold);
        true
    }

    fn succeeded(&self) {
        if let Ok(mut b) = self.breaker.lock() {
            let was_open = b.open_until.is_some();
            b.failures = 0;
            b.open_until = None;
            b.probing_until = None;
            if was_open {
                tracing::info!(arm = self.arm.id(), instance = %self.base, "circuit breaker closed");
                self.report(BreakerState::Closed);
            }
        }
    }

    fn failed(&self, settings: BreakerSettings) {
        if let Ok(mut b) = self.breaker.lock() {
            b.failures += 1;
            b.probing_until = None;
            let half_open = b.open_until.is_some();
            if half_open || b.failures >= settings.failures {
                self.open(&mut b, settings.cool_down);
            }
        }
    }

    fn open(&self, b: &mut Breaker, cool_down: Duration) {
        let now = Instant::now();
        if Self::state_of(b, now) != BreakerState::Open {
            tracing::warn!(arm = self.arm.id(), instance = %self.base, "circuit breaker open");
            metrics::counter!("octollm_arm_breaker_opened_total", "arm" => self.arm.id())
                .increment(1);
            self.report(BreakerState::Open);
        }
        b.open_until = Some(now + cool_down);
    }

    /// What a health poll learned: unready opens the breaker at once (no call should wait
    /// for it to fail); ready ends an open breaker's cool-down, so the next call probes it.
    fn polled(&self, ready: bool, settings: BreakerSettings) {
        let Ok(mut b) = self.breaker.lock() else {
            return;
        };
        let now = Instant::now();
        match (ready, Self::state_of(&b, now)) {
            (false, BreakerState::Closed | BreakerState::Open) => {
                self.open(&mut b, settings.cool_down);
            }
            // A half-open instance that is still unready stays out for another cool-down.
            (false, BreakerState::HalfOpen) => b.open_until = Some(now + settings.cool_down),
            (true, BreakerState::Open) => {
                b.open_until = Some(now);
                self.report(BreakerState::HalfOpen);
            }
            (true, _) => {}
        }
    }
}

/// The instances of one arm and how to call them.
pub struct ArmClient {
    arm: ArmKind,
    instances: RwLock<Vec<Arc<Instance>>>,
    next: AtomicUsize,
    http: reqwest::Client,
    timeout: Duration,
    breaker: BreakerSettings,
    /// Signs a capability token for every call when the orchestrator holds a signing key.
    signer: Option<Arc<TokenSigner>>,
}

/// What went wrong with one instance.
enum Attempt {
    /// Try the next instance.
    Retry(ArmError),
    /// The answer stands (the arm refused, the request was bad, …).
    Final(ArmError),
}

fn usage_of(headers: &reqwest::header::HeaderMap) -> Usage {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    Usage {
        prompt_tokens: get(USAGE_PROMPT).and_then(|v| v.parse().ok()).unwrap_or(0),
        completion_tokens: get(USAGE_COMPLETION)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        cost_dollars: get(USAGE_COST).and_then(|v| v.parse().ok()).unwrap_or(0.0),
    }
}

/// Checks an arm instance's base URL: http(s), a host, nothing after the path.
pub fn check_endpoint(arm: ArmKind, base: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(base)
        .map_err(|e| format!("{} arm endpoint {base:?} is not a URL: {e}", arm.id()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "{} arm endpoint {base:?} must start with http:// or https://",
            arm.id()
        ));
    }
    if url.host_str().is_none_or(str::is_empty)
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(format!(
            "{} arm endpoint {base:?} must be scheme://host[:port][/path] without credentials, query or fragment",
            arm.id()
        ));
    }
    Ok(())
}

impl ArmClient {
    /// `bases` are the configured instances' base URLs (`http://coder-arm:8102`); at least one.
    pub fn new(
        arm: ArmKind,
        bases: &[String],
        timeout: Duration,
        breaker: BreakerSettings,
    ) -> Result<Self, String> {
        if bases.is_empty() {
            return Err(format!("no endpoint for the {} arm", arm.id()));
        }
        Self::with_configured(arm, bases, timeout, breaker)
    }

    /// A client whose instances may all come from the registry (none at first: calls fail
    /// as unavailable until one registers).
    pub fn with_configured(
        arm: ArmKind,
        bases: &[String],
        timeout: Duration,
        breaker: BreakerSettings,
    ) -> Result<Self, String> {
        for base in bases {
            check_endpoint(arm, base)?;
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            arm,
            instances: RwLock::new(
                bases
                    .iter()
                    .map(|b| Instance::new(arm, b, Origin::Configured))
                    .collect(),
            ),
            next: AtomicUsize::new(0),
            http,
            timeout,
            breaker,
            signer: None,
        })
    }

    /// Every call carries a capability token signed by `signer`.
    pub fn with_signer(mut self, signer: Option<Arc<TokenSigner>>) -> Self {
        self.signer = signer;
        self
    }

    pub fn arm(&self) -> ArmKind {
        self.arm
    }

    fn snapshot(&self) -> Vec<Arc<Instance>> {
        match self.instances.read() {
            Ok(list) => list.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Where the arm runs and how it is doing: healthy while every instance's breaker is
    /// closed, degraded while some are, unavailable when none is.
    pub fn status(&self) -> ArmStatus {
        let now = Instant::now();
        let instances = self.snapshot();
        let closed = instances
            .iter()
            .filter(|i| i.state(now) == BreakerState::Closed)
            .count();
        let health = match (closed, instances.len()) {
            (_, 0) => Health::Unavailable(format!("no {} arm instance is registered", self.arm)),
            (0, n) => Health::Unavailable(format!("all {n} instances are failing")),
            (c, n) if c < n => Health::Degraded(format!("{} of {n} instances are failing", n - c)),
            _ => Health::Healthy,
        };
        ArmStatus {
            endpoints: instances.iter().map(|i| i.base.clone()).collect(),
            health,
        }
    }

    /// Each instance's base URL, origin and breaker state.
    pub fn instances(&self) -> Vec<(String, Origin, BreakerState)> {
        let now = Instant::now();
        self.snapshot()
            .iter()
            .map(|i| (i.base.clone(), i.origin, i.state(now)))
            .collect()
    }

    /// Makes `urls` the registered instances: new ones join (breaker closed), ones no longer
    /// registered leave, the others keep their breaker state. Configured instances stay.
    pub fn set_registered(&self, urls: &[String]) {
        let mut list = match self.instances.write() {
            Ok(list) => list,
            Err(poisoned) => poisoned.into_inner(),
        };
        let wanted: Vec<String> = urls
            .iter()
            .map(|u| u.trim_end_matches('/').to_owned())
            .collect();
        list.retain(|i| {
            let keep = i.origin == Origin::Configured || wanted.contains(&i.base);
            if !keep {
                tracing::info!(arm = self.arm.id(), instance = %i.base, "arm instance left the registry");
            }
            keep
        });
        for url in wanted {
            if !list.iter().any(|i| i.base == url) {
                tracing::info!(arm = self.arm.id(), instance = %url, "arm instance registered");
                list.push(Instance::new(self.arm, &url, Origin::Registered));
            }
        }
    }

    /// Asks every instance's `/ready` (at most `timeout` each, all at once) and feeds the
    /// answers to the breakers.
    pub async fn poll_health(&self, timeout: Duration) {
        let checks = self.snapshot().into_iter().map(|instance| async move {
            let ready = matches!(
                self.http
                    .get(format!("{}/ready", instance.base))
                    .timeout(timeout)
                    .send()
                    .await,
                Ok(r) if r.status().is_success()
            );
            instance.polled(ready, self.breaker);
        });
        futures::future::join_all(checks).await;
    }

    /// The instances to try for one call: a half-open one first if this call gets its probe
    /// slot (if the probe fails the call moves on), then the closed ones from the
    /// round-robin position; open ones are skipped.
    fn order(&self) -> Vec<Arc<Instance>> {
        let now = Instant::now();
        let all = self.snapshot();
        let n = all.len();
        if n == 0 {
            return Vec::new();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let rotated: Vec<Arc<Instance>> =
            (0..n).map(|k| Arc::clone(&all[(start + k) % n])).collect();
        let probe = rotated
            .iter()
            .find(|i| i.claim_probe(now, self.timeout))
            .cloned();
        probe
            .into_iter()
            .chain(
                rotated
                    .into_iter()
                    .filter(|i| i.state(now) == BreakerState::Closed),
            )
            .collect()
    }

    async fn attempt<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        instance: &Instance,
        path: &'static str,
        request: &Req,
        ctx: &CallContext,
        grant: &ExecutorGrant,
    ) -> Result<ArmOutcome<Resp>, Attempt> {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let left = Duration::from_millis(ctx.budget.time_remaining_ms(now_ms));
        if left.is_zero() {
            return Err(Attempt::Final(ArmError::Timeout));
        }
        let mut call = self
            .http
            .post(format!("{}{path}", instance.base))
            .timeout(self.timeout.min(left))
            .json(request);
        for (name, value) in budget_headers(&ctx.budget) {
            call = call.header(name, value);
        }
        if !ctx.request_id.is_empty() {
            call = call.header(crate::request_id::HEADER, &ctx.request_id);
        }
        if let Some(task) = &ctx.task_id {
            call = call.header(TASK_ID, task.as_str());
        }
        if let Some(unit) = &ctx.unit {
            call = call.header(STEP_ID, unit.to_string());
        }
        if let Some(trace) = &ctx.trace {
            call = call.header(crate::request_id::TRACEPARENT, trace.header());
        }
        if let Some(signer) = &self.signer {
            // One token per attempt: short-lived, for this arm and operation only.
            let token = signer.issue(
                self.arm,
                path.trim_start_matches('/'),
                ctx.task_id.as_ref().map(|t| t.as_str()),
                grant.clone(),
                now_ms / 1000,
            );
            call = call.bearer_auth(token);
        }
        let response = match call.send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return Err(Attempt::Retry(ArmError::Timeout)),
            Err(e) => {
                return Err(Attempt::Retry(ArmError::Unavailable(format!(
                    "{} arm at {}: {}",
                    self.arm.id(),
                    instance.base,
                    if e.is_connect() {
                        "connection refused"
                    } else {
                        "request failed"
                    }
                ))));
            }
        };
        let status = response.status().as_u16();
        let usage = usage_of(response.headers());
        let model = response
            .headers()
            .get(MODEL)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if response.status().is_success() {
            return match response.json::<Resp>().await {
                Ok(body) => Ok(ArmOutcome {
                    response: body,
                    usage,
                    model,
                    instance: instance.base.clone(),
                }),
                Err(e) => Err(Attempt::Retry(ArmError::Unavailable(format!(
                    "unreadable answer from {}: {e}",
                    instance.base
                )))),
            };
        }
        let error = arm_error(status, response.json::<ErrorBody>().await.ok(), usage);
        if error.is_retryable() {
            Err(Attempt::Retry(error))
        } else {
            Err(Attempt::Final(error))
        }
    }

    /// One call of `path` whose token grants `grant`, moving to the next instance when one
    /// fails in a way another may not.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &'static str,
        request: &Req,
        ctx: &CallContext,
        grant: &ExecutorGrant,
    ) -> Result<ArmOutcome<Resp>, ArmError> {
        let order = self.order();
        if order.is_empty() {
            return Err(ArmError::Unavailable(if self.snapshot().is_empty() {
                format!("no {} arm instance is registered", self.arm.id())
            } else {
                format!(
                    "every {} arm instance is failing (circuit breakers open)",
                    self.arm.id()
                )
            }));
        }
        let mut last = None;
        for instance in order {
            match self.attempt(&instance, path, request, ctx, grant).await {
                Ok(outcome) => {
                    instance.succeeded();
                    return Ok(outcome);
                }
                Err(Attempt::Final(e)) => {
                    // The instance answered: it is healthy.
                    instance.succeeded();
                    return Err(e);
                }
                Err(Attempt::Retry(e)) => {
                    instance.failed(self.breaker);
                    metrics::counter!("octollm_arm_call_failovers_total", "arm" => self.arm.id())
                        .increment(1);
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or(ArmError::Unavailable(format!(
            "no {} arm instance answered",
            self.arm.id()
        ))))
    }
}

/// One operation over HTTP: the client of its arm, behind the operation's handler trait.
struct Remote<O> {
    client: Arc<ArmClient>,
    operation: PhantomData<fn() -> O>,
}

#[async_trait]
impl<O: Operation> Handler<O> for Remote<O> {
    async fn handle(
        &self,
        request: O::Request,
        ctx: CallContext,
    ) -> Result<ArmOutcome<O::Response>, ArmError> {
        // The token grants what the plan granted the step (the executor then refuses a
        // request beyond it); outside a plan, exactly what this request does.
        let grant = ctx.grant.clone().unwrap_or_else(|| O::grant(&request));
        self.client.call(O::ROUTE, &request, &ctx, &grant).await
    }

    /// The service's own readiness, polled, shows in the breakers.
    fn status(&self) -> ArmStatus {
        self.client.status()
    }
}

/// The operations of `client`'s arm over HTTP, the others as given: a remote arm replaces an
/// in-process one.
pub fn with_remote(mut arms: Arms, client: Arc<ArmClient>) -> Arms {
    struct Replace<'a> {
        arms: &'a mut Arms,
        client: Arc<ArmClient>,
    }
    impl OperationVisitor for Replace<'_> {
        fn visit<O: Operation>(&mut self) {
            if O::ARM == self.client.arm {
                O::replace(
                    self.arms,
                    Arc::new(Remote::<O> {
                        client: Arc::clone(&self.client),
                        operation: PhantomData,
                    }),
                );
            }
        }
    }
    octollm_arms::visit_operations(&mut Replace {
        arms: &mut arms,
        client,
    });
    arms
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(urls: &[&str]) -> ArmClient {
        let urls: Vec<String> = urls.iter().map(|u| (*u).to_owned()).collect();
        ArmClient::new(
            ArmKind::Coder,
            &urls,
            Duration::from_secs(30),
            BreakerSettings {
                failures: 1,
                cool_down: Duration::ZERO,
            },
        )
        .unwrap()
    }

    #[test]
    fn a_half_open_instance_is_probed_by_one_call_at_a_time() {
        let c = client(&["http://a:1", "http://b:1"]);
        let a = Arc::clone(&c.snapshot()[0]);
        a.failed(c.breaker);
        // Zero cool-down: half-open at once.
        assert_eq!(a.state(Instant::now()), BreakerState::HalfOpen);
        let first: Vec<String> = c.order().iter().map(|i| i.base.clone()).collect();
        let second: Vec<String> = c.order().iter().map(|i| i.base.clone()).collect();
        assert_eq!(
            first,
            ["http://a:1", "http://b:1"],
            "the first call probes a"
        );
        assert_eq!(
            second,
            ["http://b:1"],
            "a second call does not probe it too"
        );
        // The probe's answer frees the slot: success closes the breaker.
        a.succeeded();
        assert_eq!(a.state(Instant::now()), BreakerState::Closed);
        assert_eq!(c.order().len(), 2);
    }

    #[test]
    fn a_probe_that_never_reports_frees_its_slot_after_the_call_timeout() {
        let c = client(&["http://a:1"]);
        let a = Arc::clone(&c.snapshot()[0]);
        a.failed(c.breaker);
        let now = Instant::now();
        assert!(a.claim_probe(now, Duration::from_secs(30)));
        assert!(!a.claim_probe(now + Duration::from_secs(29), Duration::from_secs(30)));
        assert!(a.claim_probe(now + Duration::from_secs(31), Duration::from_secs(30)));
    }

    #[test]
    fn registration_keeps_the_breaker_of_an_instance_still_registered() {
        let c = client(&["http://configured:1"]);
        c.set_registered(&["http://r1:1".into(), "http://r2:1".into()]);
        let r1 = c
            .snapshot()
            .into_iter()
            .find(|i| i.base == "http://r1:1")
            .unwrap();
        r1.polled(false, BreakerSettings::default());
        c.set_registered(&["http://r1:1/".into()]);
        let states = c.instances();
        assert_eq!(states.len(), 2, "{states:?}");
        assert_eq!(
            states[1],
            ("http://r1:1".into(), Origin::Registered, BreakerState::Open)
        );
        assert_eq!(states[0].1, Origin::Configured);
    }

    #[test]
    fn endpoints_are_checked() {
        for good in ["http://coder-arm:8102", "https://10.0.0.1:8102/arm"] {
            assert!(check_endpoint(ArmKind::Coder, good).is_ok(), "{good}");
        }
        for bad in [
            "coder:8102",
            "ftp://coder:8102",
            "http://user:pw@coder:8102",
            "http://coder:8102/?x=1",
            "http://coder:8102/#f",
            "http://",
        ] {
            assert!(check_endpoint(ArmKind::Coder, bad).is_err(), "{bad}");
        }
    }
}
