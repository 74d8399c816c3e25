//! The steps every Responses session shares, over HTTP and WebSocket alike: what memory and
//! model knowledge say to change in a request, how a change is reported, and how an answer
//! teaches rethread a turn. One place, so the two transports cannot drift apart.

use std::sync::Arc;

use bytes::Bytes;

use crate::app::App;
use crate::config::Mode;
use crate::ledger::{self};
use crate::repair;
use crate::repair::change::{self, Change, Rules};
use crate::repair::items::Turn;
use crate::repair::request::RequestView;
use crate::repair::rewrite::Directives;
use crate::repair::upstream_error::{LongField, Refusal, UpstreamError};
use crate::tenant::TenantKey;

/// A request's change and what it was decided from, so that a refusal can ask for another.
pub struct Planned {
    pub change: Change,
    turns: Vec<Arc<Turn>>,
    /// The chain the request continues, as memory holds it, newest first (walked only when
    /// needed: see `planned`).
    chain: Vec<Arc<Turn>>,
    /// The chain's whole history, once the upstream said it lost the chain and memory held it.
    history: Option<Arc<[Bytes]>>,
    /// Memory did not answer before the request went (down, slower than `store_timeout`): a
    /// refusal asks it once more.
    missed: bool,
    rules: Rules,
    directives: Directives,
    /// Retries a refusal has asked for so far (bounded by `fallback_retries`).
    retries: u32,
    /// The client's own request has been sent: whatever comes now is relayed.
    reverted: bool,
}

/// What to send after the upstream refused what was sent.
pub enum Next {
    /// This change: what the refusal asked for.
    Retry(Box<Change>),
    /// The client's own request, once (never worse than no proxy); the refusal's kind.
    Revert(&'static str),
    /// Nothing better: the refusal goes to the client.
    Relay,
}

impl Planned {
    /// An unchanged request (observe mode, a body rethread cannot read).
    pub fn unchanged() -> Self {
        Planned {
            change: Change::default(),
            turns: Vec::new(),
            chain: Vec::new(),
            history: None,
            missed: false,
            rules: Rules {
                policy: Default::default(),
                stateless_include: false,
                model_may_reason: true,
                switches: Default::default(),
                exclude_encrypted: false,
                answer_calls: None,
                upstream_unstored: false,
            },
            directives: Directives::default(),
            retries: 0,
            reverted: false,
        }
    }

    /// What to send after the upstream refused `sent` (HTTP and WebSocket alike): a change the
    /// refusal asks for (within `fallback_retries`; dropping a refused `include` edit costs no
    /// retry), else the client's own request once if `sent` was changed, else nothing.
    #[allow(clippy::too_many_arguments)]
    pub async fn after_refusal(
        &mut self,
        app: &App,
        tenant: TenantKey,
        model: Option<&str>,
        body: &[u8],
        view: Option<&RequestView<'_>>,
        sent: &Change,
        error: &UpstreamError,
    ) -> Next {
        let refusal = &error.refusal;
        if refusal.model_does_not_reason() {
            if let Some(model) = model {
                app.models.learn(tenant, model, false);
            }
        }
        if self.reverted {
            return Next::Relay;
        }
        let repair = &app.settings.repair;
        if self.missed && repair.mode == Mode::Repair {
            if let Some(next) = self.asked_again(app, tenant, body, view, sent).await {
                return Next::Retry(Box::new(next));
            }
        }
        if *refusal == Refusal::PreviousNotFound && repair.mode == Mode::Repair {
            if let Some(next) = self.expanded(app, tenant, view, sent).await {
                return Next::Retry(Box::new(next));
            }
        }
        if let Some(view) = view {
            // The field edits each set a directive once, so they cannot loop: they cost no
            // retry of `fallback_retries` (a request can need all of them, one refusal each).
            if repair.mode == Mode::Repair && refusal.asks_for_field_edit() {
                // Only a change that edits more than was sent: a refused field rethread does not
                // edit (a non-null `status` a stricter server refuses) is not sent again as it was.
                let more = |n: &Change| n.field_edits() > sent.field_edits();
                if let Some(next) = self.after(body, view, refusal).filter(more) {
                    tracing::debug!(rules = %next.rules_text(), reason = refusal.label(), "upstream refused a field; retrying with it edited");
                    return Next::Retry(Box::new(next));
                }
            }
            if repair.mode == Mode::Repair && self.retries < repair.fallback_retries {
                if let Some(next) = self.answer(body, view, sent, refusal) {
                    tracing::debug!(ids = ?next.ids(), rules = %next.rules_text(), "upstream named what to change; retrying with it");
                    metrics::counter!(crate::metrics::FALLBACK_RETRIES, "outcome" => "retried")
                        .increment(1);
                    self.retries += 1;
                    return Next::Retry(Box::new(next));
                }
            }
        }
        if *refusal == Refusal::EncryptedUnsupported && repair.mode == Mode::Repair {
            if let Some(view) = view {
                if let Some(next) = self.without_encrypted(body, view, sent) {
                    tracing::info!(
                        reason = refusal.label(),
                        "upstream refused encrypted reasoning for this model; retrying without the client's include entry"
                    );
                    return Next::Retry(Box::new(next));
                }
            }
        }
        if *refusal == Refusal::EncryptedUnsupported && sent.include {
            let next = Change {
                include: false,
                ..sent.clone()
            };
            // With nothing else changed, the revert below sends the same bytes.
            if !next.is_empty() && !next.places_reasoning() {
                tracing::info!(
                    reason = refusal.label(),
                    "upstream refused encrypted reasoning for this model; retrying without adding it"
                );
                metrics::counter!(crate::metrics::REVERTS, "reason" => refusal.label())
                    .increment(1);
                return Next::Retry(Box::new(next));
            }
        }
        if self.retries > 0 {
            metrics::counter!(crate::metrics::FALLBACK_RETRIES, "outcome" => "still_failed")
                .increment(1);
        }
        let (code, param) = (
            error.code.as_deref().unwrap_or(""),
            error.param.as_deref().unwrap_or(""),
        );
        if sent.is_empty() {
            // The Azure wording of a missing reasoning item names none: nothing to insert.
            tracing::info!(
                reason = refusal.label(),
                code,
                param,
                "upstream refused the request as the client sent it; nothing rethread knows answers it"
            );
            return Next::Relay;
        }
        tracing::info!(
            reason = refusal.label(),
            code,
            param,
            ids = ?sent.ids(),
            "upstream refused a changed request; sending the client's own"
        );
        metrics::counter!(crate::metrics::REVERTS, "reason" => refusal.label()).increment(1);
        self.reverted = true;
        Next::Revert(refusal.label())
    }

    /// Memory did not answer before the request went: asked once more now that the upstream
    /// refused it, the change what memory holds makes (when it makes any other).
    async fn asked_again(
        &mut self,
        app: &App,
        tenant: TenantKey,
        body: &[u8],
        view: Option<&RequestView<'_>>,
        sent: &Change,
    ) -> Option<Change> {
        self.missed = false;
        let view = view?;
        let keys = lookup_keys(view);
        let turns = app
            .ledger
            .lookup(tenant, &keys, ledger::ITEM_KEYS)
            .await
            .ok()?;
        if turns.is_empty() {
            return None;
        }
        self.turns = turns;
        let directives = self.directives.clone();
        let (next, _) = self.decide(body, view, self.rules, &directives);
        let more = next.items() > sent.items() || next.rules_text() != sent.rules_text();
        tracing::info!(
            repaired = more,
            "memory did not answer before the request went; asked again after the refusal"
        );
        more.then_some(next)
    }

    /// N6: the upstream lost the chain the request continues; when memory holds all of it, the
    /// change as sent with the chain's history in place of `previous_response_id`. Once per
    /// request, on top of `fallback_retries`.
    async fn expanded(
        &mut self,
        app: &App,
        tenant: TenantKey,
        view: Option<&RequestView<'_>>,
        sent: &Change,
    ) -> Option<Change> {
        let previous = view?.previous_response_id.as_deref()?;
        if !self.rules.switches.expand || self.history.is_some() {
            return None;
        }
        if self.chain.len() < ledger::chain::MAX_DEPTH {
            self.chain =
                walk_chain(app, tenant, previous, ledger::chain::MAX_DEPTH, |_| false).await;
        }
        let Some(history) = repair::chain::history(&self.chain) else {
            tracing::info!(
                turns = self.chain.len(),
                "upstream lost the chain; memory does not hold all of it"
            );
            return None;
        };
        tracing::info!(
            turns = self.chain.len(),
            items = history.len(),
            "upstream lost the chain; sending its history in its place"
        );
        let history: Arc<[Bytes]> = history.into();
        self.history = Some(history.clone());
        Some(Change {
            expand: Some(history),
            ..sent.clone()
        })
    }

    /// The change for the request under `rules` and `directives`, with what its chain asks.
    fn decide(
        &self,
        body: &[u8],
        view: &RequestView<'_>,
        rules: Rules,
        directives: &Directives,
    ) -> (Change, Option<repair::plan::Unrepairable>) {
        let (change, why) = change::decide(body, view, &self.turns, rules, directives);
        let mut change =
            change::with_chain(change, body, view, &self.chain, rules, self.history.clone());
        if directives.conversation_duplicates {
            let held = self.conversation_turns(view);
            change = change::without_held(change, body, view, &held, rules);
        }
        (change, why)
    }

    /// The remembered turns the request's `conversation` holds (the server appended them).
    fn conversation_turns(&self, view: &RequestView<'_>) -> Vec<Arc<Turn>> {
        let Some(conversation) = view.conversation.as_deref() else {
            return Vec::new();
        };
        self.turns
            .iter()
            .filter(|t| {
                t.link
                    .as_ref()
                    .and_then(|l| l.conversation.as_deref())
                    .is_some_and(|c| c == conversation)
            })
            .cloned()
            .collect()
    }

    /// E14 on the client's own `include`: the change decided again for a model that does not
    /// reason, with the entry removed. Costs no retry of `fallback_retries`; once per request.
    fn without_encrypted(
        &mut self,
        body: &[u8],
        view: &RequestView<'_>,
        sent: &Change,
    ) -> Option<Change> {
        if sent.exclude || !self.rules.switches.exclude || !view.includes_encrypted_reasoning {
            return None;
        }
        let rules = Rules {
            model_may_reason: false,
            stateless_include: false,
            exclude_encrypted: true,
            ..self.rules
        };
        let (change, _) = self.decide(body, view, rules, &self.directives);
        self.rules = rules;
        change.exclude.then_some(change)
    }

    /// The change that answers the upstream's refusal of `change`, if there is one: the
    /// reasoning item an E1 names, inserted (memory did not know it); or the rewrite an E2, E6
    /// or E15 asks for.
    fn answer(
        &mut self,
        body: &[u8],
        view: &RequestView<'_>,
        change: &Change,
        refusal: &Refusal,
    ) -> Option<Change> {
        if let Refusal::MissingReasoning { item, reasoning } = refusal {
            let mut extra = repair::cold_insertion(view, &change.insertions, item, reasoning)?;
            if let Some(rewrite) = &change.rewrite {
                // Gaps count the rewritten input's items.
                extra.gap = rewrite.order.iter().position(|&n| n == extra.gap)?;
            }
            let mut next = change.clone();
            next.insertions = repair::with_insertion(next.insertions, extra);
            return Some(next);
        }
        self.after(body, view, refusal)
            .filter(|next| !next.is_empty())
    }

    /// The change the upstream's refusal asks for, when a rewrite answers it: E2 naming a
    /// reasoning item the client sent (dropped), E6 for a call the client sent by reference (the
    /// recorded call), E15 (every reasoning item dropped), and the field edits of `fields.rs`
    /// (N3, N4, N5, N12; call ids are never aliased in a chained request, whose chain holds the
    /// originals). `None` when there is none, or it
    /// would send the same request again.
    fn after(&mut self, body: &[u8], view: &RequestView<'_>, refusal: &Refusal) -> Option<Change> {
        let sent = |id: &str| {
            view.input
                .as_ref()
                .is_some_and(|i| i.items.iter().any(|item| item.id() == Some(id)))
        };
        let mut directives = self.directives.clone();
        let mut rules = self.rules;
        match refusal {
            Refusal::MissingFollower { id } if rules.switches.drops && sent(id) => {
                directives.drop_ids.push(id.clone());
            }
            Refusal::ReasoningUnsupported if rules.switches.drops => {
                directives.drop_reasoning = true;
                rules.model_may_reason = false;
                rules.stateless_include = false;
            }
            Refusal::NoToolCall { call_id } if rules.switches.complete => {
                directives.expand_calls.push(call_id.clone());
            }
            Refusal::ReasoningContent | Refusal::UnknownParameter if rules.switches.sanitise => {
                directives.sanitise = true;
            }
            Refusal::TooLong { field } if rules.switches.alias && !view.chained => match field {
                LongField::CallId => directives.alias_call_ids = true,
                LongField::Id => directives.drop_long_ids = true,
            },
            Refusal::InvalidAction if rules.switches.restore => {
                directives.restore_actions = true;
            }
            // N7 with a conversation: the upstream names an item its conversation holds, and
            // memory saw that item in it; every item memory saw there goes (exact copies only).
            Refusal::Duplicate { id }
                if rules.switches.dedupe
                    && self
                        .conversation_turns(view)
                        .iter()
                        .any(|t| t.items.iter().any(|i| *i.id == **id)) =>
            {
                directives.conversation_duplicates = true;
            }
            _ => return None,
        }
        if directives == self.directives {
            return None;
        }
        let (change, _) = self.decide(body, view, rules, &directives);
        self.directives = directives;
        self.rules = rules;
        Some(change)
    }
}

/// What memory and model knowledge say to change.
pub async fn planned(app: &App, tenant: TenantKey, body: &[u8], view: &RequestView<'_>) -> Planned {
    let rules = Rules {
        policy: app.settings.repair.policy,
        stateless_include: app.settings.repair.stateless_include,
        model_may_reason: app.models.may_reason(tenant, view.model.as_deref()),
        switches: app.settings.repair.rewrites,
        exclude_encrypted: app.models.refused_reasoning(tenant, view.model.as_deref()),
        answer_calls: app.settings.repair.answer_calls(),
        upstream_unstored: app.upstream_store.drops_store(tenant),
    };
    let keys = lookup_keys(view);
    let mut missed = false;
    let turns = if keys.is_empty() {
        Vec::new()
    } else {
        match app.ledger.lookup(tenant, &keys, ledger::ITEM_KEYS).await {
            Ok(turns) => turns,
            Err(e) => {
                tracing::warn!(error = %e, "ledger lookup failed; forwarding without memory");
                metrics::counter!(crate::metrics::STORE_ERRORS, "op" => "lookup").increment(1);
                missed = true;
                Vec::new()
            }
        }
    };
    let chain = match &view.previous_response_id {
        Some(previous) => chain_for(app, tenant, view, &turns, rules, previous).await,
        None => Vec::new(),
    };
    let mut planned = Planned {
        change: Change::default(),
        turns,
        chain,
        history: None,
        missed,
        rules,
        directives: Directives::default(),
        retries: 0,
        reverted: false,
    };
    let (change, unrepairable) = planned.decide(body, view, rules, &Directives::default());
    if let Some(why) = unrepairable {
        tracing::info!(reason = why.reason(), detail = ?why, "request names remembered items that cannot be made whole; inserting none");
        metrics::counter!(crate::metrics::UNREPAIRABLE, "reason" => why.reason()).increment(1);
    }
    planned.change = change;
    planned
}

/// The part of the chain a chained request needs at first: back to the turns holding the items
/// it sends that memory knows by id (they may be sent again, N7), or just the last response
/// (its calls, with `unanswered_calls = answer`); none when it sends nothing memory knows.
async fn chain_for(
    app: &App,
    tenant: TenantKey,
    view: &RequestView<'_>,
    turns: &[Arc<Turn>],
    rules: Rules,
    previous: &str,
) -> Vec<Arc<Turn>> {
    let sent: std::collections::HashSet<&str> = view
        .input
        .iter()
        .flat_map(|i| i.items.iter().filter_map(|item| item.id()))
        .collect();
    // Ids of the request's items that remembered, linked turns hold as items (a call id an
    // output names is no item of the chain sent again).
    let known: Vec<&str> = turns
        .iter()
        .filter(|t| t.link.is_some())
        .flat_map(|t| t.items.iter().map(|i| &*i.id))
        .filter(|id| sent.contains(id))
        .collect();
    if rules.switches.dedupe && !known.is_empty() {
        let found_all = |chain: &[Arc<Turn>]| {
            known
                .iter()
                .all(|id| chain.iter().any(|t| t.items.iter().any(|i| &*i.id == *id)))
        };
        walk_chain(app, tenant, previous, ledger::chain::MAX_DEPTH, found_all).await
    } else if rules.answer_calls.is_some() {
        walk_chain(app, tenant, previous, 1, |_| false).await
    } else {
        Vec::new()
    }
}

/// The chain ending at `last` as memory holds it (`ledger::chain`), or none when the store
/// fails (counted like any lookup).
async fn walk_chain(
    app: &App,
    tenant: TenantKey,
    last: &str,
    depth: usize,
    enough: impl Fn(&[Arc<Turn>]) -> bool,
) -> Vec<Arc<Turn>> {
    match ledger::chain::walk(&*app.ledger, tenant, last, depth, enough).await {
        Ok(chain) => chain,
        Err(e) => {
            tracing::warn!(error = %e, "ledger lookup failed; forwarding without the chain");
            metrics::counter!(crate::metrics::STORE_ERRORS, "op" => "lookup").increment(1);
            Vec::new()
        }
    }
}

/// The ids and call ids of a request's input, as memory is asked for them.
fn lookup_keys<'v>(view: &'v RequestView<'_>) -> Vec<&'v str> {
    let Some(input) = &view.input else {
        return Vec::new();
    };
    let mut keys: Vec<&str> = input
        .items
        .iter()
        .flat_map(|i| [i.id(), i.call_id()])
        .flatten()
        .filter(|k| !k.is_empty() && k.len() <= MAX_ID_LEN)
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys.truncate(MAX_LOOKUP_KEYS);
    keys
}

/// Ids longer than this are not the API's; they are never looked up.
const MAX_ID_LEN: usize = 256;
/// At most this many distinct ids of one request are looked up.
const MAX_LOOKUP_KEYS: usize = 4096;

/// The last step of a request's life, over HTTP and WebSocket alike, once the upstream has
/// answered what was finally sent (`accepted`: the response started): the change is counted
/// and logged, and an accepted `reasoning` parameter teaches that the model reasons (unless
/// rethread took encrypted reasoning out of the request, which says nothing of it).
pub fn finished(
    app: &App,
    tenant: TenantKey,
    model: Option<&str>,
    reasoning_param: bool,
    change: &Change,
    accepted: bool,
) {
    if !change.is_empty() {
        record_repair(change);
    }
    if accepted && reasoning_param && !change.exclude {
        if let Some(model) = model {
            app.models.learn(tenant, model, true);
        }
    }
}

/// One info line naming the rules a change applied (the ids at debug), and the metrics.
fn record_repair(change: &Change) {
    tracing::info!(rules = %change.rules_text(), inserted = change.items(), "repaired request");
    if !change.answered.is_empty() {
        tracing::info!(call_ids = ?change.answered, "wrote an output for calls the request left unanswered (unanswered_calls = answer)");
    }
    tracing::debug!(inserted = ?change.ids(), dropped = ?change.dropped_ids(), "repaired request's items");
    metrics::counter!(crate::metrics::REPAIRED_REQUESTS).increment(1);
    for ty in change.item_types() {
        metrics::counter!(crate::metrics::REPAIRS, "item_type" => ty.label()).increment(1);
    }
    for (rule, n) in change.rules() {
        metrics::counter!(crate::metrics::REPAIR_RULES, "rule" => rule).increment(n as u64);
    }
}
