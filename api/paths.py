"""Where the API's routes live: the contract's prefix."""

PREFIX = "/api/v1/enhanced-traffic-coordination"
