module github.com/lxzan/gws

go 1.20

require github.com/klauspost/compress v1.17.9
