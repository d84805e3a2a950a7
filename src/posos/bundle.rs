//! TODO: being written in parallel (tolerant FHIR bundle reader)
