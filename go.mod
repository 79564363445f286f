module github.com/securetrain/securetrain

go 1.25.0
