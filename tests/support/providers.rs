//! Mock OAuth2 providers (filled in by the OAuth2 tests).
