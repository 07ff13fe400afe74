//! Sans-IO RFC 6455 frame codec (being built).
