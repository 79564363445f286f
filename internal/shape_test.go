package internal_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
)

// TestLauncherShape keeps the launcher readable: one job's life is a type
// whose steps are methods (launcher/job.go), and no function of the
// launcher is longer than a screen (80 lines) or takes more than five
// parameters; those that travel together go in a type.
func TestLauncherShape(t *testing.T) {
	const maxLines, maxParams = 80, 5
	files, err := filepath.Glob(filepath.Join("..", "launcher", "*.go"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no launcher sources: %v", err)
	}
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(af, func(n ast.Node) bool {
			var typ *ast.FuncType
			var body *ast.BlockStmt
			name := "a function literal"
			switch fn := n.(type) {
			case *ast.FuncDecl:
				typ, body, name = fn.Type, fn.Body, fn.Name.Name
			case *ast.FuncLit:
				typ, body = fn.Type, fn.Body
			default:
				return true
			}
			if body == nil {
				return true
			}
			at := fset.Position(n.Pos())
			if lines := fset.Position(body.End()).Line - fset.Position(body.Pos()).Line + 1; lines > maxLines {
				t.Errorf("%s:%d: %s is %d lines long (at most %d: split it into steps)", filepath.Base(at.Filename), at.Line, name, lines, maxLines)
			}
			if params := typ.Params.NumFields(); params > maxParams {
				t.Errorf("%s:%d: %s takes %d parameters (at most %d: group those that travel together into a type)", filepath.Base(at.Filename), at.Line, name, params, maxParams)
			}
			return true
		})
	}
}
