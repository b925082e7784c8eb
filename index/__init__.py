"""A crash-safe FAISS gallery of embeddings with SQLite metadata, and bulk indexing."""
