"""A simulated Kandian-like news feed: the study's default data (docs/protocol.md section 5).

Modules: :mod:`.config` (the knobs, presets), :mod:`.population` (drawing users and items), :mod:`.feed` (the
logging policy's log), :mod:`.world` (simulating both, whole or in chunks of users), :mod:`.oracle` (the ground
truth) and :mod:`.calibration` (feed marginals against their targets).

Real Kandian logs are private, so the study runs by default on a simulated feed that has what the paper is
about: clickbait that is clicked a lot and read briefly, zero-duration non-clicks, and a logging policy with
position bias. The world, in the order :func:`simulate` draws it:

Users
    Observed categorical features (gender, age band, city tier, device, activity level). Each observed
    feature value adds a topic-logit vector; their sum sets the user's segment mean over topics, and the
    user's latent topic affinities ``theta_u`` are Dirichlet around it (sparse), so the observed features
    carry real but incomplete signal about what a user reads. Latent reading speed (log-normal, weakly
    slower with age band), latent click propensity, and latent activity (sessions per day), of which the
    observed ``activity_level`` is a coarse bin.
Items
    Observed topic (``category``), length band, publisher and title style; latent length in seconds,
    quality, title attractiveness and clickbait flag. Clickbait items (share ``clickbait_share``) have high
    attractiveness and low quality. The title style only weakly tells clickbait apart, as in real feeds.
    Quality is observed nowhere: a model can learn it only from logged reading behaviour per item id.
Logging policy
    Each active user-day has a Poisson number of feed sessions of ``feed_length`` positions. Items are drawn
    from a mix of topic match and a log-normal popularity (not uniform), ranked by the policy's own score
    within the session (so position also carries some topic match, as in a ranked feed), and a (user, item)
    pair is shown at most once. Every item is available every day, except cold items (below).
Cold items (``cold_item_share``, default 0)
    A random share of the corpus is released on day ``n_days - cold_item_days``: the policy draws only from
    the items available that day, so cold items are never logged before (with ``cold_item_days =
    data.test_days`` they are the test period's new items; their ids fall in the out-of-vocabulary bucket).
Fans (``fan_strength``, default 0)
    Each user is a fan of up to ``fan_publishers`` publishers (a topic drawn by her affinities, then one of
    its home publishers): a sparse, high-rank user x publisher affinity the two towers cannot represent. On a
    fan's publisher the click logit gains ``fan_strength`` and the reading logits ``fan_strength / 2`` (bounce
    lower, read fraction higher). The policy ignores fans. With ``log_publisher_clicks`` the log carries the
    impression context ``ctx_publisher_clicks``: the user's clicks on the item's publisher at earlier times,
    which only impression-level models (the teacher) see.
Click
    ``P(click) = exam(position) * sigmoid(logit)`` with examination ``1 / (1 + position) ** position_decay``
    and ``logit = click_bias + user_bias + match_click_weight * match + attractiveness_weight * attractiveness
    + quality_click_weight * quality + fan_strength * fan``, where ``match = log(n_topics * theta_u[topic] +
    match_floor)`` and ``fan`` is 1 on a fan's publisher, else 0.
Reading duration (clicked impressions only; non-clicks have duration 0)
    With probability ``p_bounce = sigmoid(bounce_bias - quality_read_effect * quality - match_read_effect *
    match - fan_strength / 2 * fan)`` the user bounces after a log-normal few seconds; otherwise the duration
    is ``length_s / reading_speed * f`` with read fraction ``f ~ Beta`` of mean ``sigmoid(read_fraction_bias +
    quality_read_effect * quality + match_read_effect * match + fan_strength / 2 * fan)``. Clickbait therefore
    mostly bounces.

Regime knobs (docs/protocol.md section 5, issue 15): data density (``sessions_per_user_day``, ``n_items``),
long-read rate (``bounce_bias``), cold items (``cold_item_share``) and teacher-privileged information
(``fan_strength`` with ``log_publisher_clicks``); :func:`~.calibration.knob_figures` gives the figure each
one moves. Their randomness (cold items, fans) comes from streams apart from the main one, so the default
world is unchanged and moving one knob leaves the rest of the world in place.

The ground truth is an :class:`Oracle`, written apart from the log and never given to models: it computes,
for any users and the whole corpus, the click probability without position effect, the expected duration
given a click and the long-read probability, in closed form from the same formulas the simulation samples
(fans included), plus each item's release day and each user's fan publishers.
"""
