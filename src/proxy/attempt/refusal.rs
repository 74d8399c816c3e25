//! `refused`'s decision: after the upstream refused what was sent, a change the refusal asks for
//! (within `fallback_retries`; the field edits and a refused `include` cost no retry), else the
//! client's own request once when what was sent was changed (never worse than no proxy), else
//! the refusal goes to the client.

use super::Attempt;
use crate::config::Mode;
use crate::repair;
use crate::repair::change::{Change, Rules};
use crate::repair::request::RequestView;
use crate::repair::upstream_error::{LongField, Refusal, UpstreamError};

/// What to send after the upstream refused what was sent.
pub(super) enum Next {
    /// This change: what the refusal asked for.
    Retry(Box<Change>),
    /// The client's own request, once; the refusal's kind.
    Revert(&'static str),
    /// Nothing better: the refusal goes to the client.
    Relay,
}

impl Attempt {
    pub(super) async fn next_after(
        &mut self,
        view: Option<&RequestView<'_>>,
        error: &UpstreamError,
    ) -> Next {
        let refusal = &error.refusal;
        if refusal.model_does_not_reason() {
            if let Some(model) = self.facts.as_ref().and_then(|f| f.model.as_deref()) {
                self.app.models.learn(self.tenant, model, false);
            }
        }
        if self.reverted.is_some() {
            return Next::Relay;
        }
        if self.app.settings.repair.mode == Mode::Repair {
            if let Some(next) = self.repaired(view, refusal).await {
                return Next::Retry(Box::new(next));
            }
        }
        if let Some(next) = self.without_added_include(refusal) {
            return Next::Retry(Box::new(next));
        }
        self.give_up(error)
    }

    /// The change a refusal asks for, in order: memory asked again when it did not answer
    /// before; the chain's history when the upstream lost it (N6); a field edit; the answer to
    /// a refusal that names what to change; the client's own `include` entry taken out (E14).
    async fn repaired(
        &mut self,
        view: Option<&RequestView<'_>>,
        refusal: &Refusal,
    ) -> Option<Change> {
        if self.grounds.missed {
            if let Some(next) = self.asked_again(view?).await {
                return Some(next);
            }
        }
        let view = view?;
        if *refusal == Refusal::PreviousNotFound {
            if let Some(next) = self.expanded(view).await {
                return Some(next);
            }
        }
        // The field edits each set a directive once, so they cannot loop: they cost no retry
        // of `fallback_retries` (a request can need all of them, one refusal each).
        if refusal.asks_for_field_edit() {
            // Only a change that edits more than was sent: a refused field rethread does not
            // edit (a non-null `status` a stricter server refuses) is not sent again as it was.
            let sent = self.change.field_edits();
            if let Some(next) = self.after(view, refusal).filter(|n| n.field_edits() > sent) {
                tracing::debug!(rules = %next.rules_text(), reason = refusal.label(), "upstream refused a field; retrying with it edited");
                return Some(next);
            }
        }
        if self.grounds.retries < self.app.settings.repair.fallback_retries {
            if let Some(next) = self.answer(view, refusal) {
                tracing::debug!(ids = ?next.ids(), rules = %next.rules_text(), "upstream named what to change; retrying with it");
                metrics::counter!(crate::metrics::FALLBACK_RETRIES, "outcome" => "retried")
                    .increment(1);
                self.grounds.retries += 1;
                return Some(next);
            }
        }
        if *refusal == Refusal::EncryptedUnsupported {
            if let Some(next) = self.without_encrypted(view) {
                tracing::info!(
                    reason = refusal.label(),
                    "upstream refused encrypted reasoning for this model; retrying without the client's include entry"
                );
                return Some(next);
            }
        }
        None
    }

    /// E14 on the `include` entry rethread added: the change without it, when something else
    /// still changes (with nothing else, the revert sends the same bytes).
    fn without_added_include(&self, refusal: &Refusal) -> Option<Change> {
        if *refusal != Refusal::EncryptedUnsupported || !self.change.include {
            return None;
        }
        let next = Change {
            include: false,
            ..self.change.clone()
        };
        if next.is_empty() || next.places_reasoning() {
            return None;
        }
        tracing::info!(
            reason = refusal.label(),
            "upstream refused encrypted reasoning for this model; retrying without adding it"
        );
        metrics::counter!(crate::metrics::REVERTS, "reason" => refusal.label()).increment(1);
        Some(next)
    }

    /// Nothing answers the refusal: the client's own request once if what was sent was
    /// changed, else the refusal as it is.
    fn give_up(&self, error: &UpstreamError) -> Next {
        let refusal = &error.refusal;
        if self.grounds.retries > 0 {
            metrics::counter!(crate::metrics::FALLBACK_RETRIES, "outcome" => "still_failed")
                .increment(1);
        }
        let (code, param) = (
            error.code.as_deref().unwrap_or(""),
            error.param.as_deref().unwrap_or(""),
        );
        if self.change.is_empty() {
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
            ids = ?self.change.ids(),
            "upstream refused a changed request; sending the client's own"
        );
        metrics::counter!(crate::metrics::REVERTS, "reason" => refusal.label()).increment(1);
        Next::Revert(refusal.label())
    }

    /// Memory did not answer before the request went: asked once more now that the upstream
    /// refused it, the change what memory holds makes (when it makes any other).
    async fn asked_again(&mut self, view: &RequestView<'_>) -> Option<Change> {
        if !self
            .grounds
            .look_up_again(&self.app, self.tenant, view)
            .await
        {
            return None;
        }
        let (next, _) = self.decide(view, self.grounds.rules, &self.grounds.directives);
        let sent = &self.change;
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
    async fn expanded(&mut self, view: &RequestView<'_>) -> Option<Change> {
        let previous = view.previous_response_id.as_deref()?;
        if !self.grounds.rules.switches.expand || self.grounds.history.is_some() {
            return None;
        }
        let history = self
            .grounds
            .history(&self.app, self.tenant, previous)
            .await?;
        Some(Change {
            expand: Some(history),
            ..self.change.clone()
        })
    }

    /// E14 on the client's own `include`: the change decided again for a model that does not
    /// reason, with the entry removed. Costs no retry of `fallback_retries`; once per request.
    fn without_encrypted(&mut self, view: &RequestView<'_>) -> Option<Change> {
        let rules = self.grounds.rules;
        if self.change.exclude || !rules.switches.exclude || !view.includes_encrypted_reasoning {
            return None;
        }
        let rules = Rules {
            model_may_reason: false,
            stateless_include: false,
            exclude_encrypted: true,
            ..rules
        };
        let (change, _) = self.decide(view, rules, &self.grounds.directives);
        self.grounds.rules = rules;
        change.exclude.then_some(change)
    }

    /// The change that answers the upstream's refusal of what was sent, if there is one: the
    /// reasoning item an E1 names, inserted (memory did not know it); or the rewrite an E2, E6
    /// or E15 asks for.
    fn answer(&mut self, view: &RequestView<'_>, refusal: &Refusal) -> Option<Change> {
        if let Refusal::MissingReasoning { item, reasoning } = refusal {
            let sent = &self.change;
            let mut extra = repair::cold_insertion(view, &sent.insertions, item, reasoning)?;
            if let Some(rewrite) = &sent.rewrite {
                // Gaps count the rewritten input's items.
                extra.gap = rewrite.order.iter().position(|&n| n == extra.gap)?;
            }
            let mut next = sent.clone();
            next.insertions = repair::with_insertion(next.insertions, extra);
            return Some(next);
        }
        self.after(view, refusal).filter(|next| !next.is_empty())
    }

    /// The change the upstream's refusal asks for, when a rewrite answers it: E2 naming a
    /// reasoning item the client sent (dropped), E6 for a call the client sent by reference (the
    /// recorded call), E15 (every reasoning item dropped), the field edits of `fields.rs` (N3,
    /// N4, N5, N12; call ids are never aliased in a chained request, whose chain holds the
    /// originals), and N7 in a conversation. `None` when there is none, or it would send the
    /// same request again.
    fn after(&mut self, view: &RequestView<'_>, refusal: &Refusal) -> Option<Change> {
        let sent = |id: &str| {
            view.input
                .as_ref()
                .is_some_and(|i| i.items.iter().any(|item| item.id() == Some(id)))
        };
        let mut directives = self.grounds.directives.clone();
        let mut rules = self.grounds.rules;
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
                if rules.switches.dedupe && self.saw_in_conversation(view, id) =>
            {
                directives.conversation_duplicates = true;
            }
            _ => return None,
        }
        if directives == self.grounds.directives {
            return None;
        }
        let (change, _) = self.decide(view, rules, &directives);
        self.grounds.directives = directives;
        self.grounds.rules = rules;
        Some(change)
    }

    /// Memory saw item `id` in the request's conversation.
    fn saw_in_conversation(&self, view: &RequestView<'_>, id: &str) -> bool {
        self.grounds
            .conversation_turns(view)
            .iter()
            .any(|t| t.items.iter().any(|i| *i.id == *id))
    }

    /// The change for the request under `rules` and `directives` (`Grounds::decide`).
    fn decide(
        &self,
        view: &RequestView<'_>,
        rules: Rules,
        directives: &repair::rewrite::Directives,
    ) -> (Change, Option<repair::plan::Unrepairable>) {
        self.grounds.decide(&self.body, view, rules, directives)
    }
}
