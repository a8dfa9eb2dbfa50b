//! Covata connector (being written).
