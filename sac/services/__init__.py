"""sac.services: the work of the SAC between the meters' connections and the store."""
