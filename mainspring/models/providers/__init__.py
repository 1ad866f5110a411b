"""Model providers: each speaks one wire format behind ``ModelProvider``."""
