//! Errors of a build. Each names the Dockerfile position of the step (file:
//! line:column), the instruction, and what failed.

use crate::frontend::error::Pos;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A step failed: `at` is `FILE:LINE:COL`, `step` the instruction text.
    #[error("{at}: {step}: {message}")]
    Step {
        at: String,
        step: String,
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A RUN command exited non-zero.
    #[error("{at}: {step}: the command exited with code {code}")]
    RunFailed { at: String, step: String, code: i32 },
    #[error("{what}: {source}")]
    Store {
        what: String,
        #[source]
        source: crate::store::StoreError,
    },
    #[error("base image {reference}: {message}")]
    Base {
        reference: String,
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    #[error("{0}")]
    Other(String),
}

/// Where a step is, for messages.
#[derive(Debug, Clone)]
pub struct StepRef {
    pub at: String,
    pub text: String,
}

impl StepRef {
    pub fn new(file: &str, pos: Pos, text: &str) -> StepRef {
        StepRef {
            at: format!("{file}:{}:{}", pos.line, pos.column),
            text: text.to_string(),
        }
    }

    pub fn fail(&self, message: impl Into<String>) -> EngineError {
        EngineError::Step {
            at: self.at.clone(),
            step: self.text.clone(),
            message: message.into(),
            source: None,
        }
    }

    pub fn wrap<E: std::error::Error + Send + Sync + 'static>(
        &self,
        message: impl Into<String>,
    ) -> impl FnOnce(E) -> EngineError + '_ {
        let message = message.into();
        move |e| EngineError::Step {
            at: self.at.clone(),
            step: self.text.clone(),
            message,
            source: Some(Box::new(e)),
        }
    }
}

pub fn store_err(what: impl Into<String>) -> impl FnOnce(crate::store::StoreError) -> EngineError {
    let what = what.into();
    move |source| EngineError::Store { what, source }
}
