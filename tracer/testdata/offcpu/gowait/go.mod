module gowait

go 1.21
