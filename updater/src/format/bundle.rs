//! Reading `.tender` bundles.
