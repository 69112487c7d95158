package ratelimit

import _ "pgregory.net/rapid"
