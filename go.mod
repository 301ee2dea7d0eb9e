module wsmesh

go 1.26.8

require (
	github.com/BurntSushi/toml v1.6.0
	github.com/golang-jwt/jwt/v5 v5.3.1
	github.com/lmittmann/tint v1.2.1
	github.com/lxzan/gws v1.9.1
)

require (
	github.com/klauspost/compress v1.17.9 // indirect
	github.com/stretchr/testify v1.12.1 // indirect
)
