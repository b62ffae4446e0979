@acceptance
Feature: Sessions are shared and users are rate limited
  Sessions live in the shared cache, so a user signed in on one server stays signed in on
  the other; each user may make a bounded number of requests a minute.

  Scenario: A session created on one server is valid on the other
    When I sign in through the entrypoint and use the session until another server answers
    Then the session is valid on the other server

  Scenario: The rate limit refuses requests beyond the limit
    When a fresh user sends one request more than the rate limit allows
    Then every request within the limit succeeds and the next one is refused with 429
