//! `begin`'s question to memory and the change it decides: the turns holding the request's ids,
//! the part of its chain it needs, and the rules model knowledge and the settings give.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;

use super::Grounds;
use crate::app::App;
use crate::ledger;
use crate::repair;
use crate::repair::change::{self, Change, Rules};
use crate::repair::items::Turn;
use crate::repair::plan::Unrepairable;
use crate::repair::request::RequestView;
use crate::repair::rewrite::Directives;
use crate::tenant::TenantKey;

/// Ids longer than this are not the API's; they are never looked up.
const MAX_ID_LEN: usize = 256;
/// At most this many distinct ids of one request are looked up.
const MAX_LOOKUP_KEYS: usize = 4096;

/// What memory and model knowledge say to change in a request, and what it was decided from.
pub(super) async fn planned(
    app: &App,
    tenant: TenantKey,
    body: &[u8],
    view: &RequestView<'_>,
) -> (Grounds, Change) {
    let rules = rules_for(app, tenant, view);
    let (turns, memory) = look_up(app, tenant, view).await;
    let missed = memory == "unavailable";
    let chain = match &view.previous_response_id {
        Some(previous) => chain_for(app, tenant, view, &turns, rules, previous).await,
        None => Vec::new(),
    };
    let mut grounds = Grounds {
        turns,
        chain,
        history: None,
        missed,
        rules,
        directives: Directives::default(),
        retries: 0,
        memory,
        unchanged: None,
    };
    let (change, unrepairable) = grounds.decide(body, view, rules, &Directives::default());
    if let Some(why) = unrepairable {
        grounds.unchanged = Some(why.reason());
        tracing::info!(reason = why.reason(), detail = ?why, "request names remembered items that cannot be made whole; inserting none");
        metrics::counter!(crate::metrics::UNREPAIRABLE, "reason" => why.reason()).increment(1);
    }
    (grounds, change)
}

/// The rules the settings and what traffic taught about the tenant and model give.
fn rules_for(app: &App, tenant: TenantKey, view: &RequestView<'_>) -> Rules {
    let repair = &app.settings.repair;
    Rules {
        policy: repair.policy,
        stateless_include: repair.stateless_include,
        model_may_reason: app.models.may_reason(tenant, view.model.as_deref()),
        switches: repair.rewrites,
        exclude_encrypted: app.models.refused_reasoning(tenant, view.model.as_deref()),
        answer_calls: repair.answer_calls(),
        upstream_unstored: app.upstream_store.drops_store(tenant),
    }
}

/// The remembered turns holding the request's ids, and whether memory answered: `hit`, `none`
/// (it holds none of them), `unavailable` (the store failed) or `not_asked` (no id to ask for).
async fn look_up(
    app: &App,
    tenant: TenantKey,
    view: &RequestView<'_>,
) -> (Vec<Arc<Turn>>, &'static str) {
    let keys = lookup_keys(view);
    if keys.is_empty() {
        return (Vec::new(), "not_asked");
    }
    match app.ledger.lookup(tenant, &keys, ledger::ITEM_KEYS).await {
        Ok(turns) if turns.is_empty() => (turns, "none"),
        Ok(turns) => (turns, "hit"),
        Err(e) => {
            tracing::warn!(error = %e, "ledger lookup failed; forwarding without memory");
            metrics::counter!(crate::metrics::STORE_ERRORS, "op" => "lookup").increment(1);
            (Vec::new(), "unavailable")
        }
    }
}

impl Grounds {
    /// For a request rethread does not change (a body it cannot read).
    pub(super) fn unchanged() -> Self {
        Grounds {
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
            memory: "not_asked",
            unchanged: None,
        }
    }

    /// Memory asked again (it did not answer before the request went): the turns it holds now.
    pub(super) async fn look_up_again(
        &mut self,
        app: &App,
        tenant: TenantKey,
        view: &RequestView<'_>,
    ) -> bool {
        self.missed = false;
        let keys = lookup_keys(view);
        match app.ledger.lookup(tenant, &keys, ledger::ITEM_KEYS).await {
            Ok(turns) if !turns.is_empty() => {
                self.turns = turns;
                true
            }
            _ => false,
        }
    }

    /// The change for the request under `rules` and `directives`, with what its chain asks.
    pub(super) fn decide(
        &self,
        body: &[u8],
        view: &RequestView<'_>,
        rules: Rules,
        directives: &Directives,
    ) -> (Change, Option<Unrepairable>) {
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
    pub(super) fn conversation_turns(&self, view: &RequestView<'_>) -> Vec<Arc<Turn>> {
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

    /// N6: the chain ending at `previous` walked back as far as memory holds it, and its whole
    /// history when memory holds all of it.
    pub(super) async fn history(
        &mut self,
        app: &App,
        tenant: TenantKey,
        previous: &str,
    ) -> Option<Arc<[Bytes]>> {
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
        Some(history)
    }
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
    let sent: HashSet<&str> = view
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
