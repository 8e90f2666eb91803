//! proto-docs examples parse through the protocol types (written with the docs).
