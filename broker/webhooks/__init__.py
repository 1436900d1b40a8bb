"""Status webhooks: endpoints an account registers (:mod:`.endpoints`), the events and
their signatures (:mod:`.events`), where a POST may go (:mod:`.addresses`), one POST
(:mod:`.courier`), and the dispatcher that queues and delivers them (:mod:`.dispatcher`)."""
