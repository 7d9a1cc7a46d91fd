"""The service provider's side: the Flask API, the SQL store, the index backends, search,
the query log and the manifest that binds a model, an index and a store together."""
