//! Attribute names. The GenAI ones are rethread's own constants: the semantic-conventions crate
//! hides them as deprecated (they moved to a repository with no release yet), and they are all
//! still at status Development. The HTTP ones are stable.

pub(super) const HTTP_REQUEST_METHOD: &str = "http.request.method";
pub(super) const HTTP_ROUTE: &str = "http.route";
pub(super) const HTTP_RESPONSE_STATUS_CODE: &str = "http.response.status_code";
pub(super) const HTTP_REQUEST_RESEND_COUNT: &str = "http.request.resend_count";
pub(super) const ERROR_TYPE: &str = "error.type";
pub(super) const SERVER_ADDRESS: &str = "server.address";
pub(super) const SERVER_PORT: &str = "server.port";
pub(super) const SERVICE_VERSION: &str = "service.version";

pub(super) const GEN_AI_OPERATION_NAME: &str = "gen_ai.operation.name";
pub(super) const GEN_AI_PROVIDER_NAME: &str = "gen_ai.provider.name";
pub(super) const GEN_AI_REQUEST_MODEL: &str = "gen_ai.request.model";
pub(super) const GEN_AI_RESPONSE_MODEL: &str = "gen_ai.response.model";
pub(super) const GEN_AI_RESPONSE_ID: &str = "gen_ai.response.id";
pub(super) const GEN_AI_USAGE_INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
pub(super) const GEN_AI_USAGE_OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
pub(super) const GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: &str =
    "gen_ai.usage.cache_read.input_tokens";
pub(super) const GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: &str =
    "gen_ai.usage.reasoning.output_tokens";

/// The rules a change applied (`x-rethread-repairs`).
pub(super) const RETHREAD_REPAIRS: &str = "rethread.repairs";
/// Items placed into what was finally sent (`x-rethread-inserted`).
pub(super) const RETHREAD_INSERTED: &str = "rethread.inserted";
/// Why the client's own request was sent instead (`x-rethread-reverted`).
pub(super) const RETHREAD_REVERTED: &str = "rethread.reverted";
/// Why a request naming remembered items was left unchanged.
pub(super) const RETHREAD_UNCHANGED: &str = "rethread.unchanged_reason";
/// Whether memory answered: `hit`, `none`, `unavailable`, `not_asked`.
pub(super) const RETHREAD_MEMORY: &str = "rethread.memory";
