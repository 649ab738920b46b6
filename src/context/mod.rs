//! Build context: walking and filtering the context directory (in progress).
