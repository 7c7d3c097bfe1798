-- spool.prompt: templates with substitutions and sections, no code.
local prompt = require "spool.prompt"
local json = require "spool.json"

local function render(text, vars)
  return prompt.render(prompt.compile(text, "t.md"), vars)
end

describe("spool.prompt", function()
  it("substitutes names and dotted paths", function()
    assert.are.equal("Hi Ana (ana@x.io)!", render("Hi {{user.name}} "
      .. "({{ user.email }})!", { user = { name = "Ana", email = "ana@x.io" } }))
  end)

  it("renders tables as compact JSON and numbers as Lua prints them", function()
    assert.are.equal('{"a":[1,2]} 3 1.5 null', render("{{t}} {{i}} {{f}} {{n}}",
      { t = { a = json.array { 1, 2 } }, i = 3, f = 1.5, n = json.null }))
  end)

  it("repeats an each section per element", function()
    local text = "{{#each tools}}{{@index}}. {{name}}: {{description}}\n{{/each}}"
    assert.are.equal("1. a: first\n2. b: second\n", render(text, { tools = {
      { name = "a", description = "first" },
      { name = "b", description = "second" } } }))
    assert.are.equal("[x][y]", render("{{#each xs}}[{{this}}]{{/each}}",
      { xs = { "x", "y" } }))
  end)

  it("looks names up in the element first, then outside", function()
    assert.are.equal("a@shop b@shop", render(
      "{{#each users}}{{name}}@{{site}}{{#if more}} {{/if}}{{/each}}",
      { site = "shop", users = { { name = "a", more = true }, { name = "b" } } }))
  end)

  it("chooses with if / else", function()
    local text = "{{#if vip}}Dear valued {{name}}{{else}}Hello {{name}}{{/if}}"
    assert.are.equal("Dear valued Ana", render(text, { vip = true, name = "Ana" }))
    assert.are.equal("Hello Bo", render(text, { vip = false, name = "Bo" }))
    assert.are.equal("Hello Cy", render(text, { name = "Cy" }))
    assert.are.equal("", render("{{#if xs}}some{{/if}}", { xs = {} }))
  end)

  it("rejects an undefined name with the template and line", function()
    local ok, err = pcall(render, "line one\nHello {{nmae}}", { name = "x" })
    assert.is_false(ok)
    assert.are.equal("t.md:2: 'nmae' is not defined", err)
  end)

  it("rejects malformed sections when compiled", function()
    for text, msg in pairs {
      ["{{#each xs}}never closed"] = "t.md:1: '{{#each}}' is never closed",
      ["a\n{{/if}}"] = "t.md:2: '{{/if}}' without its opening",
      ["{{else}}"] = "t.md:1: '{{else}}' outside an {{#if}}",
      ["{{ os.exit() }}"] = "t.md:1: '{{os.exit()}}' is not a variable name "
        .. "or a section",
    } do
      local ok, err = pcall(prompt.compile, text, "t.md")
      assert.is_false(ok)
      assert.are.equal(msg, err)
    end
  end)

  it("knows a template with no substitution, which renders as it is",
    function()
      for _, text in ipairs { "", "You add.", "a { b } {{ c", "}} x {{" } do
        local t = prompt.compile(text, "s.md")
        assert.are.equal(text, t.static)
        assert.are.equal(text, prompt.render(t, { input = "anything" }))
      end
      for _, text in ipairs { "{{x}}", "a {{#if x}}b{{/if}}" } do
        assert.is_nil(prompt.compile(text, "s.md").static)
      end
    end)

  it("caches compiled templates by content", function()
    assert.are.equal(prompt.compile("x {{y}}", "a.md"),
      prompt.compile("x {{y}}", "a.md"))
  end)
end)
