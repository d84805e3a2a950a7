//! The launch API's one error type and the HTML page a clinician sees for it.
//!
//! Every page says what happened and what to do in French, then in English, and shows the
//! correlation id that the logs carry too, so support can find the launch. The `Display` text
//! of [`LaunchError`] is what the logs get: it never holds patient data (PHI) or Posos's free
//! text; the page may show the identifier the clinician's own link carried.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use super::access::AccessError;
use super::launch::LaunchFailure;
use crate::mapping::ApplyError;
use crate::text::escape_html;

/// The header that carries the correlation id on every launch answer.
pub const CORRELATION_HEADER: &str = "x-correlation-id";

/// Why a launch did not end in a redirect to Posos.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The allow-list or the link signature refused the request.
    #[error("launch refused: {0}")]
    Forbidden(#[from] AccessError),
    /// A required query parameter is missing or blank.
    #[error("the launch link has no `{0}` parameter")]
    MissingParameter(String),
    /// None of the patient identifier parameters is in the link.
    #[error("the launch link has no patient identifier: expected `{}`", .0.join("`, `"))]
    NoPatientKey(Vec<String>),
    /// The census does not know the patient and fallback launches are off.
    #[error("unknown patient: no census entry for the `{parameter}` of the link")]
    UnknownPatient { parameter: String, value: String },
    /// The user's names are neither in the link nor in the census.
    #[error("unknown practitioner: no names in the link and none in the census for this rpps")]
    UnknownPractitioner { rpps: String },
    /// The census (context store) failed.
    #[error("the census lookup failed: {0}")]
    Context(String),
    /// The scan-token or guide mapping could not build the request (a required field without
    /// a value, most often). The text names fields and expressions, never values.
    #[error("{}", mapping_text(request, error))]
    Mapping {
        /// `scan-token` or `guide`.
        request: &'static str,
        error: ApplyError,
    },
    /// Posos failed or refused.
    #[error(transparent)]
    Posos(#[from] LaunchFailure),
    /// Posos answered a redirect target that is not an http(s) URL.
    #[error("posos returned an unusable url")]
    BadRedirect { url: String },
    /// The launch page (`mode=page`) cannot be shown: the text says why and what to set
    /// (no patient value).
    #[error("the launch page cannot be shown: {0}")]
    PageUnavailable(String),
}

/// `scan-token field `patientId` has no value: `patient.ipp` is empty`, or the mapping's
/// own text for the rarer failures.
fn mapping_text(request: &str, error: &ApplyError) -> String {
    match error {
        ApplyError::Required { at, expr } => {
            format!("{request} field {at} has no value: `{expr}` is empty")
        }
        other => format!("the {request} mapping failed: {other}"),
    }
}

/// What a page says, in both languages.
struct PageText {
    status: StatusCode,
    kind: &'static str,
    title_fr: &'static str,
    body_fr: String,
    title_en: &'static str,
    body_en: String,
    detail: Option<String>,
}

const RETRY_FR: &str = "Réessayez dans quelques instants. Si le problème persiste, contactez le \
    support informatique en donnant la référence ci-dessous.";
const RETRY_EN: &str = "Try again in a moment. If the problem persists, call IT support with the \
    reference below.";
const SUPPORT_FR: &str = "Contactez le support informatique en donnant la référence ci-dessous.";
const SUPPORT_EN: &str = "Call IT support with the reference below.";

impl LaunchError {
    /// The HTTP status of the page.
    pub fn status(&self) -> StatusCode {
        self.page_text().status
    }

    /// A short stable name for logs and metrics, e.g. `posos_timeout`.
    pub fn kind(&self) -> &'static str {
        self.page_text().kind
    }

    fn page_text(&self) -> PageText {
        match self {
            LaunchError::Forbidden(reason) => PageText {
                status: StatusCode::FORBIDDEN,
                kind: "forbidden",
                title_fr: "Lancement refusé",
                body_fr: format!(
                    "Ce poste ou ce lien n'est pas autorisé à ouvrir Posos. Rouvrez Posos depuis \
                     le dossier patient. {SUPPORT_FR}"
                ),
                title_en: "Launch refused",
                body_en: format!(
                    "This workstation or link may not open Posos. Open Posos again from the \
                     patient record. {SUPPORT_EN}"
                ),
                detail: Some(reason.to_string()),
            },
            LaunchError::MissingParameter(name) => PageText {
                status: StatusCode::BAD_REQUEST,
                kind: "missing_parameter",
                title_fr: "Lien de lancement incomplet",
                body_fr: format!(
                    "Le lien ouvert par le dossier patient ne contient pas le paramètre « {name} ». \
                     {SUPPORT_FR}"
                ),
                title_en: "Incomplete launch link",
                body_en: format!(
                    "The link opened by the patient record has no “{name}” parameter. {SUPPORT_EN}"
                ),
                detail: None,
            },
            LaunchError::NoPatientKey(names) => PageText {
                status: StatusCode::BAD_REQUEST,
                kind: "no_patient_key",
                title_fr: "Patient non indiqué",
                body_fr: format!(
                    "Le lien ouvert par le dossier patient n'indique pas le patient (paramètre \
                     « {} »). {SUPPORT_FR}",
                    names.join(" », « ")
                ),
                title_en: "No patient in the link",
                body_en: format!(
                    "The link opened by the patient record names no patient (parameter “{}”). \
                     {SUPPORT_EN}",
                    names.join("”, “")
                ),
                detail: None,
            },
            LaunchError::UnknownPatient { parameter, value } => PageText {
                status: StatusCode::NOT_FOUND,
                kind: "unknown_patient",
                title_fr: "Patient inconnu",
                body_fr: format!(
                    "Le patient ({parameter} {value}) n'est pas encore connu d'ordobridge : son \
                     admission n'a peut-être pas encore été transmise. {RETRY_FR}"
                ),
                title_en: "Unknown patient",
                body_en: format!(
                    "The patient ({parameter} {value}) is not known to ordobridge yet: the \
                     admission may not have been sent. {RETRY_EN}"
                ),
                detail: None,
            },
            LaunchError::UnknownPractitioner { rpps } => PageText {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                kind: "unknown_practitioner",
                title_fr: "Praticien inconnu",
                body_fr: format!(
                    "Le nom du praticien (RPPS {rpps}) n'est ni dans le lien ni dans les données \
                     reçues par ordobridge. {SUPPORT_FR}"
                ),
                title_en: "Unknown practitioner",
                body_en: format!(
                    "The practitioner's name (RPPS {rpps}) is neither in the link nor in the data \
                     ordobridge received. {SUPPORT_EN}"
                ),
                detail: None,
            },
            LaunchError::Context(_) => PageText {
                status: StatusCode::SERVICE_UNAVAILABLE,
                kind: "context_unavailable",
                title_fr: "Contexte patient indisponible",
                body_fr: format!("ordobridge n'a pas pu lire les données du patient. {RETRY_FR}"),
                title_en: "Patient context unavailable",
                body_en: format!("ordobridge could not read the patient data. {RETRY_EN}"),
                detail: None,
            },
            LaunchError::Mapping { .. } => PageText {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                kind: "incomplete_data",
                title_fr: "Données incomplètes",
                body_fr: format!(
                    "Une information nécessaire à Posos manque pour ce patient ou ce praticien. \
                     {SUPPORT_FR}"
                ),
                title_en: "Incomplete data",
                body_en: format!(
                    "Information that Posos needs is missing for this patient or practitioner. \
                     {SUPPORT_EN}"
                ),
                detail: Some(self.to_string()),
            },
            LaunchError::Posos(failure) => posos_page(failure),
            LaunchError::BadRedirect { .. } => PageText {
                status: StatusCode::BAD_GATEWAY,
                kind: "posos_bad_redirect",
                title_fr: "Réponse de Posos inutilisable",
                body_fr: format!("Posos a répondu une adresse inutilisable. {RETRY_FR}"),
                title_en: "Unusable answer from Posos",
                body_en: format!("Posos answered an address that cannot be opened. {RETRY_EN}"),
                detail: None,
            },
            LaunchError::PageUnavailable(reason) => PageText {
                status: StatusCode::SERVICE_UNAVAILABLE,
                kind: "page_unavailable",
                title_fr: "Page de suivi indisponible",
                body_fr: format!(
                    "Posos ne peut pas être ouvert avec le suivi de la prescription sur ce poste. {SUPPORT_FR}"
                ),
                title_en: "Follow-up page unavailable",
                body_en: format!(
                    "Posos cannot be opened with the prescription follow-up here. {SUPPORT_EN}"
                ),
                detail: Some(reason.clone()),
            },
        }
    }
}

fn posos_page(failure: &LaunchFailure) -> PageText {
    match failure {
        LaunchFailure::Unreachable(_) => PageText {
            status: StatusCode::BAD_GATEWAY,
            kind: "posos_unreachable",
            title_fr: "Posos est injoignable",
            body_fr: format!(
                "ordobridge n'arrive pas à joindre le service Posos (réseau ou service \
                 interrompu). {RETRY_FR}"
            ),
            title_en: "Posos is unreachable",
            body_en: format!(
                "ordobridge cannot reach the Posos service (network or service down). {RETRY_EN}"
            ),
            detail: None,
        },
        LaunchFailure::Timeout(_) => PageText {
            status: StatusCode::GATEWAY_TIMEOUT,
            kind: "posos_timeout",
            title_fr: "Posos ne répond pas",
            body_fr: format!("Le service Posos n'a pas répondu à temps. {RETRY_FR}"),
            title_en: "Posos does not answer",
            body_en: format!("The Posos service did not answer in time. {RETRY_EN}"),
            detail: None,
        },
        LaunchFailure::BadRequest { parameter, detail } => {
            let (fr, en) = match parameter {
                Some(p) => (
                    format!("Posos a refusé la donnée « {p} » envoyée pour ce lancement."),
                    format!("Posos refused the value of “{p}” sent for this launch."),
                ),
                None => (
                    "Posos a refusé les données envoyées pour ce lancement.".to_string(),
                    "Posos refused the data sent for this launch.".to_string(),
                ),
            };
            PageText {
                status: StatusCode::BAD_REQUEST,
                kind: "posos_bad_request",
                title_fr: "Posos a refusé la demande",
                body_fr: format!("{fr} {SUPPORT_FR}"),
                title_en: "Posos refused the request",
                body_en: format!("{en} {SUPPORT_EN}"),
                detail: Some(detail.clone()).filter(|d| !d.trim().is_empty()),
            }
        }
        LaunchFailure::Unauthorized(_) => PageText {
            status: StatusCode::BAD_GATEWAY,
            kind: "posos_unauthorized",
            title_fr: "Accès à Posos refusé",
            body_fr: format!(
                "Posos refuse l'identité de service de l'établissement (clé de service expirée \
                 ou erronée). Vous n'y êtes pour rien. {SUPPORT_FR}"
            ),
            title_en: "Posos refused access",
            body_en: format!(
                "Posos refuses the hospital's service identity (expired or wrong service key). \
                 This is not your fault. {SUPPORT_EN}"
            ),
            detail: None,
        },
        LaunchFailure::Other(_) => PageText {
            status: StatusCode::BAD_GATEWAY,
            kind: "posos_error",
            title_fr: "Erreur du service Posos",
            body_fr: format!("Le service Posos a répondu par une erreur. {RETRY_FR}"),
            title_en: "Posos service error",
            body_en: format!("The Posos service answered with an error. {RETRY_EN}"),
            detail: None,
        },
    }
}

/// A failed launch with its correlation id: renders the HTML page and writes the log line.
#[derive(Debug)]
pub struct ErrorPage {
    pub correlation_id: Uuid,
    pub error: LaunchError,
}

impl IntoResponse for ErrorPage {
    fn into_response(self) -> Response {
        let text = self.error.page_text();
        let id = self.correlation_id;
        if text.status.is_server_error() {
            tracing::error!(correlation_id = %id, status = text.status.as_u16(), kind = text.kind, error = %self.error, "launch failed");
        } else {
            tracing::warn!(correlation_id = %id, status = text.status.as_u16(), kind = text.kind, error = %self.error, "launch refused");
        }
        if let Some(detail) = &text.detail {
            // May quote patient data or Posos's free text: trace level only.
            tracing::trace!(correlation_id = %id, detail = %detail, "launch failure detail");
        }
        let html = render(&text, id);
        let mut response = (text.status, html).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Ok(value) = HeaderValue::from_str(&id.to_string()) {
            headers.insert(CORRELATION_HEADER, value);
        }
        response
    }
}

fn render(text: &PageText, id: Uuid) -> String {
    let detail = text
        .detail
        .as_deref()
        .map(|d| {
            format!(
                "<p class=\"detail\">Détail technique / Technical detail&nbsp;: <code>{}</code></p>\n",
                escape_html(d)
            )
        })
        .unwrap_or_default();
    format!(
        "<!DOCTYPE html>\n\
         <html lang=\"fr\">\n\
         <head>\n\
         <meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title_fr} — ordobridge</title>\n\
         <style>body{{font-family:system-ui,sans-serif;max-width:40em;margin:3em auto;padding:0 1em;color:#1b1b1b;line-height:1.5}}\
         h1{{color:#a4262c;font-size:1.6em}}h2{{font-size:1.2em;color:#555}}.en{{color:#555}}\
         .ref{{background:#f3f3f3;padding:.6em 1em;border-radius:4px}}code{{font-size:1em}}</style>\n\
         </head>\n\
         <body>\n\
         <h1>{title_fr}</h1>\n\
         <p>{body_fr}</p>\n\
         <p class=\"ref\">Référence / Reference&nbsp;: <code id=\"correlation-id\">{id}</code></p>\n\
         {detail}\
         <hr>\n\
         <div class=\"en\" lang=\"en\">\n\
         <h2>{title_en}</h2>\n\
         <p>{body_en}</p>\n\
         </div>\n\
         <p class=\"en\">HTTP {status}</p>\n\
         </body>\n\
         </html>\n",
        title_fr = escape_html(text.title_fr),
        body_fr = escape_html(&text.body_fr),
        title_en = escape_html(text.title_en),
        body_en = escape_html(&text.body_en),
        status = text.status.as_u16(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn failure(kind: &str) -> LaunchError {
        LaunchError::Posos(match kind {
            "unreachable" => LaunchFailure::Unreachable("connection refused".into()),
            "timeout" => LaunchFailure::Timeout("10s".into()),
            "bad_request" => LaunchFailure::BadRequest {
                parameter: Some("rpps".into()),
                detail: "rpps must have 11 digits".into(),
            },
            "unauthorized" => LaunchFailure::Unauthorized("401".into()),
            _ => LaunchFailure::Other("500".into()),
        })
    }

    #[rstest]
    #[case::err_unreachable(
        failure("unreachable"),
        502,
        "posos_unreachable",
        "Posos est injoignable"
    )]
    #[case::err_timeout(failure("timeout"), 504, "posos_timeout", "Posos ne répond pas")]
    #[case::err_bad_request(
        failure("bad_request"),
        400,
        "posos_bad_request",
        "Posos a refusé la donnée « rpps »"
    )]
    #[case::err_unauthorized(
        failure("unauthorized"),
        502,
        "posos_unauthorized",
        "Accès à Posos refusé"
    )]
    #[case::err_other(failure("other"), 502, "posos_error", "Erreur du service Posos")]
    #[case::err_forbidden(
        LaunchError::Forbidden(AccessError::SignatureRequired),
        403,
        "forbidden",
        "the link is not signed and signatures are required"
    )]
    #[case::err_unknown_patient(LaunchError::UnknownPatient { parameter: "ipp".into(), value: "42".into() }, 404, "unknown_patient", "Le patient (ipp 42) n&#39;est pas encore connu")]
    #[case::err_missing(LaunchError::MissingParameter("rpps".into()), 400, "missing_parameter", "paramètre « rpps »")]
    #[case::err_context(LaunchError::Context("db locked".into()), 503, "context_unavailable", "Contexte patient indisponible")]
    #[case::err_practitioner(LaunchError::UnknownPractitioner { rpps: "1".into() }, 422, "unknown_practitioner", "RPPS 1")]
    #[case::err_redirect(LaunchError::BadRedirect { url: "javascript:x".into() }, 502, "posos_bad_redirect", "adresse inutilisable")]
    fn error_pages(
        #[case] error: LaunchError,
        #[case] status: u16,
        #[case] kind: &str,
        #[case] snippet: &str,
    ) {
        assert_eq!(error.status().as_u16(), status);
        assert_eq!(error.kind(), kind);
        let id = Uuid::new_v4();
        let html = render(&error.page_text(), id);
        assert!(html.contains(snippet), "{html}");
        assert!(html.contains(&format!("<code id=\"correlation-id\">{id}</code>")));
        assert!(html.contains("<html lang=\"fr\">"));
    }

    #[test]
    fn ok_response_headers() {
        let id = Uuid::new_v4();
        let response = ErrorPage {
            correlation_id: id,
            error: failure("timeout"),
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(
            response.headers().get(CORRELATION_HEADER).unwrap(),
            id.to_string().as_str()
        );
        assert_eq!(
            response.headers().get(header::CONTENT_TYPE).unwrap(),
            "text/html; charset=utf-8"
        );
    }

    #[test]
    fn ok_page_escapes_untrusted_text() {
        let error = LaunchError::UnknownPatient {
            parameter: "ipp".into(),
            value: "<script>alert(1)</script>\u{0B}".into(),
        };
        let html = render(&error.page_text(), Uuid::nil());
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;\\x0B"));
    }

    #[test]
    fn ok_log_text_has_no_phi() {
        let error = LaunchError::UnknownPatient {
            parameter: "ipp".into(),
            value: "123456".into(),
        };
        assert_eq!(
            error.to_string(),
            "unknown patient: no census entry for the `ipp` of the link"
        );
        let error = failure("bad_request");
        assert!(!error.to_string().contains("11 digits"), "{error}");
    }
}
