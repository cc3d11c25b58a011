# Cmdlet help: turns the pages in docs/ into the MAML file Get-Help reads.
# Dot-sourced by build.ps1; defines ConvertTo-MamlHelp and Help*-named helpers (the noun prefix keeps
# them from colliding with other build scripts dot-sourced into the same scope).
#
# The pages follow the PlatyPS markdown schema 2.0.0, so PlatyPS can still update them, but PlatyPS
# cannot be installed where the module is built. This converter accepts the part of that schema the
# pages use and stops at anything else with the file and line, so a malformed page fails the build
# instead of shipping help that is silently missing a section.

function ConvertTo-MamlHelp {
    <#
    .SYNOPSIS
        Converts every cmdlet page (Verb-Noun.md) in a folder into one MAML help file.
    #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory)] [string] $DocsPath,
        [Parameter(Mandatory)] [string] $OutputPath
    )

    # Other documents (architecture.md, protocol.md) share the folder; only Verb-Noun pages are help.
    $pages = @(Get-ChildItem -LiteralPath $DocsPath -File -Filter '*.md' |
        Where-Object Name -CMatch '^[A-Z][a-z]+-[A-Za-z]+\.md$' | Sort-Object Name)
    if ($pages.Count -eq 0) {
        throw "No cmdlet pages (Verb-Noun.md) were found in '$DocsPath'."
    }

    # Every page is parsed before the file is opened, so a bad page leaves no half-written help.
    $commands = @(foreach ($page in $pages) { Read-HelpPage -Path $page.FullName })
    $target = $ExecutionContext.SessionState.Path.GetUnresolvedProviderPathFromPSPath($OutputPath)
    Write-HelpMaml -Command $commands -Path $target
    Write-Verbose "Help: $($commands.Count) cmdlet(s) written to $target"
}

function New-HelpError {
    # One shape for every schema error, file:line first, so editors and CI logs can jump to it.
    param([string] $Path, [int] $Line, [string] $Message)
    [System.FormatException]::new("${Path}:${Line}: $Message")
}

function New-HelpNode {
    # A block of the page body. Every node has every property, which keeps strict mode content.
    param([string] $Kind, [int] $Line, [string] $Text, [int] $Level = 0, [string] $Language = '')
    [pscustomobject]@{ Kind = $Kind; Line = $Line; Text = $Text; Level = $Level; Language = $Language }
}

function Split-HelpMarkdown {
    # Reads a page into its front matter and a flat list of nodes (headings, fenced code blocks and
    # paragraphs), each with the line it starts on.
    param([string] $Path)

    $lines = [System.IO.File]::ReadAllLines($Path)
    if ($lines.Count -eq 0 -or $lines[0].Trim() -ne '---') {
        throw (New-HelpError $Path 1 "expected YAML front matter opened by '---'")
    }

    $meta = [ordered]@{}
    $i = 1
    for (; $i -lt $lines.Count -and $lines[$i].Trim() -ne '---'; $i++) {
        if ($lines[$i].Trim() -eq '') { continue }
        if ($lines[$i] -notmatch '^([A-Za-z][A-Za-z ]*):\s*(.*)$') {
            throw (New-HelpError $Path ($i + 1) "front matter line is not 'key: value': $($lines[$i])")
        }
        $meta[$Matches[1]] = $Matches[2].Trim()
    }
    if ($i -ge $lines.Count) {
        throw (New-HelpError $Path 1 "the front matter is never closed by '---'")
    }
    foreach ($key in 'external help file', 'Module Name', 'online version', 'schema') {
        if (-not $meta.Contains($key)) {
            throw (New-HelpError $Path 1 "the front matter has no '$key' key")
        }
    }
    if ($meta['schema'] -ne '2.0.0') {
        throw (New-HelpError $Path 1 "schema '$($meta['schema'])' is not supported; use 2.0.0")
    }

    $nodes = [System.Collections.Generic.List[object]]::new()
    $paragraph = [System.Collections.Generic.List[string]]::new()
    $paragraphLine = 0
    $flush = {
        if ($paragraph.Count -gt 0) {
            # Lines of a paragraph are one text; list items keep their own line so lists stay lists.
            $nodes.Add((New-HelpNode 'Text' $paragraphLine ($paragraph -join "`n")))
            $paragraph.Clear()
        }
    }
    for ($i++; $i -lt $lines.Count; $i++) {
        $line = $lines[$i]
        if ($line -match '^\s*```\s*([\w+-]*)\s*$') {
            . $flush
            $start = $i + 1
            $language = $Matches[1]
            $body = [System.Collections.Generic.List[string]]::new()
            for ($i++; $i -lt $lines.Count -and $lines[$i] -notmatch '^\s*```\s*$'; $i++) {
                # Markdown would read a fence with a language here as code; on these pages it is
                # always a forgotten close, which would otherwise swallow the sections that follow.
                if ($lines[$i] -match '^\s*```\S') {
                    $message = "the code block opened on line $start is not closed before this one"
                    throw (New-HelpError $Path ($i + 1) $message)
                }
                $body.Add($lines[$i])
            }
            if ($i -ge $lines.Count) {
                throw (New-HelpError $Path $start 'the code block is never closed')
            }
            $nodes.Add((New-HelpNode 'Code' $start ($body -join "`n") -Language $language))
        }
        elseif ($line -match '^(#{1,6})\s+(.+?)\s*$') {
            . $flush
            $nodes.Add((New-HelpNode 'Heading' ($i + 1) $Matches[2] -Level $Matches[1].Length))
        }
        elseif ($line.Trim() -eq '') {
            . $flush
        }
        elseif ($paragraph.Count -gt 0 -and $line -notmatch '^\s*([-*+]|\d+\.)\s') {
            $paragraph[$paragraph.Count - 1] += ' ' + $line.Trim()
        }
        else {
            if ($paragraph.Count -eq 0) { $paragraphLine = $i + 1 }
            $paragraph.Add($line.Trim())
        }
    }
    . $flush

    [pscustomobject]@{ Meta = $meta; Nodes = $nodes.ToArray() }
}

function ConvertTo-HelpText {
    # Get-Help prints plain text: keep what code spans say, drop the markup around everything else.
    param([string] $Markdown)

    $parts = [regex]::Split($Markdown, '(`[^`]*`)')
    $text = foreach ($part in $parts) {
        if ($part -match '^`(.*)`$') {
            $Matches[1]
            continue
        }
        $plain = $part -replace '\[([^\]]+)\]\(([^)]*)\)', {
            $label, $uri = $_.Groups[1].Value, $_.Groups[2].Value
            if ($uri -eq '' -or $uri -eq $label) { $label } else { "$label ($uri)" }
        }
        $plain = $plain -replace '\*\*(.+?)\*\*', '$1'
        $plain -replace '\\([\\`*_{}\[\]()#+.!<>-])', '$1'
    }
    $text -join ''
}

function Split-HelpSection {
    # Groups the nodes that follow a heading of $Level into one entry per such heading; deeper
    # headings stay in the entry for the caller to judge. Content before the first heading is an error.
    param([string] $Path, [object[]] $Node, [int] $Level, [string] $Context)

    $sections = [System.Collections.Generic.List[object]]::new()
    $current = $null
    foreach ($n in $Node) {
        if ($n.Kind -eq 'Heading' -and $n.Level -eq $Level) {
            $current = [pscustomobject]@{
                Title = $n.Text; Line = $n.Line; Nodes = [System.Collections.Generic.List[object]]::new()
            }
            $sections.Add($current)
            continue
        }
        if ($n.Kind -eq 'Heading' -and $n.Level -lt $Level) {
            throw (New-HelpError $Path $n.Line "unexpected heading level $($n.Level) in $Context")
        }
        if ($null -eq $current) {
            $heading = '#' * $Level
            throw (New-HelpError $Path $n.Line "expected a '$heading' heading before this text in $Context")
        }
        $current.Nodes.Add($n)
    }
    , $sections.ToArray()
}

function Get-HelpParagraph {
    # The paragraphs of a text-only section: paragraphs become plain text, code stays verbatim.
    param([string] $Path, [object[]] $Node, [string] $Context)

    $paragraphs = foreach ($n in $Node) {
        switch ($n.Kind) {
            'Text' { ConvertTo-HelpText $n.Text }
            'Code' { $n.Text }
            default { throw (New-HelpError $Path $n.Line "unexpected heading '$($n.Text)' in $Context") }
        }
    }
    , @($paragraphs)
}

function Read-HelpParameterYaml {
    # The metadata block of one parameter. Only the flat keys of the schema are allowed, so a typo
    # in a key is an error rather than a value that silently falls back to its default.
    param([string] $Path, [object] $Block, [string] $Parameter)

    $keys = 'Type', 'Parameter Sets', 'Aliases', 'Accepted values', 'Required', 'Position',
        'Default value', 'Accept pipeline input', 'Accept wildcard characters'
    $yaml = @{}
    $lineOf = @{}
    $lineNumber = $Block.Line
    foreach ($line in $Block.Text -split "`n") {
        $lineNumber++
        if ($line.Trim() -eq '') { continue }
        if ($line -notmatch '^([A-Za-z][A-Za-z ]*):\s*(.*)$' -or $Matches[1] -cnotin $keys) {
            $message = "-${Parameter}: '$line' is not 'key: value' with one of the keys $($keys -join ', ')"
            throw (New-HelpError $Path $lineNumber $message)
        }
        $yaml[$Matches[1]] = $Matches[2].Trim()
        $lineOf[$Matches[1]] = $lineNumber
    }
    # Errors in a value point at its own line; a missing key at the block.
    $at = { param([string] $Key) if ($lineOf.ContainsKey($Key)) { $lineOf[$Key] } else { $Block.Line } }

    $bool = {
        param([string] $Key)
        $value = if ($yaml.ContainsKey($Key)) { $yaml[$Key] } else { 'False' }
        if ($value -notin 'True', 'False') {
            $message = "-${Parameter}: '$Key' must be True or False, not '$value'"
            throw (New-HelpError $Path (& $at $Key) $message)
        }
        $value -eq 'True'
    }
    if (-not $yaml['Type']) {
        throw (New-HelpError $Path $Block.Line "-${Parameter}: the yaml block has no Type")
    }
    $position = if ($yaml['Position']) { $yaml['Position'] } else { 'Named' }
    if ($position -notmatch '^(Named|\d+)$') {
        $message = "-${Parameter}: Position must be Named or a number, not '$position'"
        throw (New-HelpError $Path (& $at 'Position') $message)
    }
    $pipeline = if ($yaml['Accept pipeline input']) { $yaml['Accept pipeline input'] } else { 'False' }
    if ($pipeline -notmatch '^(False|True \((ByValue|ByPropertyName|ByValue, ByPropertyName)\))$') {
        $message = "-${Parameter}: 'Accept pipeline input' must be False, True (ByValue), " +
            "True (ByPropertyName) or True (ByValue, ByPropertyName), not '$pipeline'"
        throw (New-HelpError $Path (& $at 'Accept pipeline input') $message)
    }
    $split = { param([string] $Value) @($Value -split ',' | ForEach-Object Trim | Where-Object { $_ }) }
    $sets = @(& $split $yaml['Parameter Sets'])

    [pscustomobject]@{
        # PlatyPS writes 'switch' for switches in some versions; MAML wants the type name.
        Type           = if ($yaml['Type'] -eq 'switch') { 'SwitchParameter' } else { $yaml['Type'] }
        Sets           = if ($sets.Count -gt 0) { , $sets } else { , @('(All)') }
        Aliases        = @(& $split $yaml['Aliases'])
        AcceptedValues = @(& $split $yaml['Accepted values'])
        Required       = & $bool 'Required'
        Position       = $position.ToLowerInvariant()
        Default        = if ($yaml['Default value']) { $yaml['Default value'] } else { 'None' }
        Pipeline       = $pipeline
        Globbing       = & $bool 'Accept wildcard characters'
    }
}

function Read-HelpParameter {
    # '### -Name', its description, then one yaml block per distinct set of metadata (a parameter
    # can be positional in one parameter set and named in another).
    param([string] $Path, [object] $Section)

    $name = $Section.Title.Substring(1)
    if ($name -notmatch '^[A-Za-z]\w*$') {
        throw (New-HelpError $Path $Section.Line "'$($Section.Title)' is not a parameter heading")
    }
    $description = [System.Collections.Generic.List[string]]::new()
    $blocks = [System.Collections.Generic.List[object]]::new()
    foreach ($n in $Section.Nodes) {
        if ($n.Kind -eq 'Code' -and $n.Language -eq 'yaml') {
            $blocks.Add((Read-HelpParameterYaml -Path $Path -Block $n -Parameter $name))
        }
        elseif ($blocks.Count -gt 0) {
            $message = "-${name}: only further yaml blocks may follow the first yaml block"
            throw (New-HelpError $Path $n.Line $message)
        }
        elseif ($n.Kind -eq 'Code') {
            $message = "-${name}: the metadata block must be marked as yaml (``````yaml)"
            throw (New-HelpError $Path $n.Line $message)
        }
        elseif ($n.Kind -eq 'Heading') {
            throw (New-HelpError $Path $n.Line "-${name}: unexpected heading '$($n.Text)'")
        }
        else {
            $description.Add((ConvertTo-HelpText $n.Text))
        }
    }
    if ($description.Count -eq 0) {
        throw (New-HelpError $Path $Section.Line "-${name} has no description")
    }
    if ($blocks.Count -eq 0) {
        $message = "-${name} has no yaml block (Type, Parameter Sets, Required, Position, ...)"
        throw (New-HelpError $Path $Section.Line $message)
    }
    [pscustomobject]@{
        Name = $name; Line = $Section.Line; Description = $description.ToArray(); Metadata = $blocks.ToArray()
    }
}

function Read-HelpPage {
    # Parses one cmdlet page into the command model Write-HelpMaml writes.
    param([string] $Path)

    $page = Split-HelpMarkdown -Path $Path
    $name = [System.IO.Path]::GetFileNameWithoutExtension($Path)
    $nodes = $page.Nodes
    if ($nodes.Count -eq 0 -or $nodes[0].Kind -ne 'Heading' -or $nodes[0].Level -ne 1) {
        $line = if ($nodes.Count -gt 0) { $nodes[0].Line } else { 1 }
        throw (New-HelpError $Path $line "expected '# $name' after the front matter")
    }
    if ($nodes[0].Text -cne $name) {
        $message = "the title '$($nodes[0].Text)' does not match the file name '$name'"
        throw (New-HelpError $Path $nodes[0].Line $message)
    }

    $known = 'SYNOPSIS', 'SYNTAX', 'DESCRIPTION', 'EXAMPLES', 'PARAMETERS', 'INPUTS', 'OUTPUTS', 'NOTES',
        'RELATED LINKS'
    $sections = @{}
    $body = @($nodes | Select-Object -Skip 1)
    foreach ($h1 in @($body | Where-Object { $_.Kind -eq 'Heading' -and $_.Level -eq 1 })) {
        throw (New-HelpError $Path $h1.Line 'a page documents one cmdlet; a second # title is not allowed')
    }
    foreach ($section in (Split-HelpSection -Path $Path -Node $body -Level 2 -Context "# $name")) {
        if ($section.Title -cnotin $known) {
            $message = "unknown section '## $($section.Title)'; expected one of $($known -join ', ')"
            throw (New-HelpError $Path $section.Line $message)
        }
        if ($sections.ContainsKey($section.Title)) {
            throw (New-HelpError $Path $section.Line "the section '## $($section.Title)' appears twice")
        }
        $sections[$section.Title] = $section
    }
    foreach ($required in 'SYNOPSIS', 'SYNTAX', 'DESCRIPTION', 'PARAMETERS') {
        if (-not $sections.ContainsKey($required)) {
            throw (New-HelpError $Path $nodes[0].Line "the page has no '## $required' section")
        }
    }

    $text = {
        param([string] $Title)
        if (-not $sections.ContainsKey($Title)) { return , @() }
        Get-HelpParagraph -Path $Path -Node $sections[$Title].Nodes -Context "## $Title"
    }
    $synopsis = & $text 'SYNOPSIS'
    if ($synopsis.Count -eq 0) {
        throw (New-HelpError $Path $sections['SYNOPSIS'].Line '## SYNOPSIS is empty')
    }
    $description = & $text 'DESCRIPTION'
    if ($description.Count -eq 0) {
        throw (New-HelpError $Path $sections['DESCRIPTION'].Line '## DESCRIPTION is empty')
    }

    $command = [pscustomobject]@{
        Name        = $name
        Synopsis    = $synopsis
        Description = $description
        Sets        = Read-HelpSyntax -Path $Path -Section $sections['SYNTAX'] -Command $name
        Parameters  = Read-HelpParameterSection -Path $Path -Section $sections['PARAMETERS']
        Inputs      = Read-HelpTypeSection -Path $Path -Section $sections['INPUTS'] -Title 'INPUTS'
        Outputs     = Read-HelpTypeSection -Path $Path -Section $sections['OUTPUTS'] -Title 'OUTPUTS'
        Notes       = & $text 'NOTES'
        Examples    = Read-HelpExampleSection -Path $Path -Section $sections['EXAMPLES']
        Links       = Read-HelpLinkSection -Path $Path -Section $sections['RELATED LINKS'] -Meta $page.Meta
    }
    Test-HelpParameterSet -Path $Path -Command $command
    $command
}

function Read-HelpSyntax {
    # Parameter set names, in page order. The code blocks are for readers of the markdown; the MAML
    # syntax is rebuilt from the parameters' metadata, as PlatyPS does.
    param([string] $Path, [object] $Section, [string] $Command)

    $nodes = @($Section.Nodes)
    if ($nodes.Count -eq 1 -and $nodes[0].Kind -eq 'Code') {
        # One unnamed block: the cmdlet has a single, default parameter set.
        return , @('__AllParameterSets')
    }
    $names = foreach ($set in (Split-HelpSection -Path $Path -Node $nodes -Level 3 -Context '## SYNTAX')) {
        $code = @($set.Nodes)
        if ($code.Count -ne 1 -or $code[0].Kind -ne 'Code') {
            throw (New-HelpError $Path $set.Line "### $($set.Title) must hold exactly one code block")
        }
        if (-not $code[0].Text.TrimStart().StartsWith($Command, [StringComparison]::Ordinal)) {
            $message = "the syntax of '$($set.Title)' does not start with $Command"
            throw (New-HelpError $Path $code[0].Line $message)
        }
        # PlatyPS marks the default set as 'Name (Default)'; parameters name it without the mark.
        $set.Title -replace '\s+\(Default\)$', ''
    }
    if (@($names).Count -eq 0) {
        throw (New-HelpError $Path $Section.Line '## SYNTAX lists no parameter set')
    }
    , @($names)
}

function Read-HelpParameterSection {
    param([string] $Path, [object] $Section)

    $parameters = [System.Collections.Generic.List[object]]::new()
    $seen = [System.Collections.Generic.HashSet[string]]::new([StringComparer]::OrdinalIgnoreCase)
    $entries = Split-HelpSection -Path $Path -Node $Section.Nodes -Level 3 -Context '## PARAMETERS'
    foreach ($entry in $entries) {
        if ($entry.Title -ceq 'CommonParameters') {
            # Get-Help describes the common parameters itself; the paragraph is for markdown readers.
            continue
        }
        if (-not $entry.Title.StartsWith('-')) {
            $message = "expected '### -ParameterName' or '### CommonParameters', not '### $($entry.Title)'"
            throw (New-HelpError $Path $entry.Line $message)
        }
        $parameter = Read-HelpParameter -Path $Path -Section $entry
        if (-not $seen.Add($parameter.Name)) {
            throw (New-HelpError $Path $entry.Line "-$($parameter.Name) is documented twice")
        }
        $parameters.Add($parameter)
    }
    , $parameters.ToArray()
}

function Read-HelpTypeSection {
    # INPUTS and OUTPUTS: one '### TypeName' per type, with what it means.
    param([string] $Path, [object] $Section, [string] $Title)

    if ($null -eq $Section) { return , @() }
    $entries = Split-HelpSection -Path $Path -Node $Section.Nodes -Level 3 -Context "## $Title"
    $types = foreach ($entry in $entries) {
        [pscustomobject]@{
            Type        = $entry.Title
            Description = Get-HelpParagraph -Path $Path -Node $entry.Nodes -Context "### $($entry.Title)"
        }
    }
    , @($types)
}

function Read-HelpExampleSection {
    # '### Example N: title', the code, then remarks (text, or further code such as sample output).
    param([string] $Path, [object] $Section)

    if ($null -eq $Section) { return , @() }
    $entries = Split-HelpSection -Path $Path -Node $Section.Nodes -Level 3 -Context '## EXAMPLES'
    $examples = foreach ($entry in $entries) {
        $nodes = @($entry.Nodes)
        if ($nodes.Count -eq 0 -or $nodes[0].Kind -ne 'Code') {
            $message = "the example '$($entry.Title)' must start with a code block"
            throw (New-HelpError $Path $entry.Line $message)
        }
        $remarks = @($nodes | Select-Object -Skip 1)
        [pscustomobject]@{
            Title   = $entry.Title
            Code    = $nodes[0].Text
            Remarks = Get-HelpParagraph -Path $Path -Node $remarks -Context "### $($entry.Title)"
        }
    }
    if (@($examples).Count -eq 0) {
        throw (New-HelpError $Path $Section.Line '## EXAMPLES holds no example')
    }
    , @($examples)
}

function Read-HelpLinkSection {
    # The front matter's online version first (Get-Help -Online opens the first link with a URI),
    # then one markdown link per line.
    param([string] $Path, [object] $Section, [System.Collections.IDictionary] $Meta)

    $links = [System.Collections.Generic.List[object]]::new()
    if ($Meta['online version']) {
        $links.Add([pscustomobject]@{ Text = 'Online Version:'; Uri = $Meta['online version'] })
    }
    if ($null -eq $Section) { return , $links.ToArray() }
    foreach ($n in $Section.Nodes) {
        if ($n.Kind -ne 'Text') {
            throw (New-HelpError $Path $n.Line '## RELATED LINKS holds only links, one per line')
        }
        foreach ($line in $n.Text -split "`n") {
            if ($line -notmatch '^\s*(?:[-*+]\s+)?\[([^\]]+)\]\(([^)\s]*)\)\s*$') {
                throw (New-HelpError $Path $n.Line "not a link ('[text](uri)'): $line")
            }
            # A relative target (Get-Sandbox.md) only means something on the docs site; Get-Help
            # prints the link text, which names the cmdlet, and a URI only when it can be opened.
            $uri = if ($Matches[2] -match '^[a-z][a-z0-9+.-]*://') { $Matches[2] } else { '' }
            $links.Add([pscustomobject]@{ Text = $Matches[1]; Uri = $uri })
        }
    }
    , $links.ToArray()
}

function Test-HelpParameterSet {
    # A parameter may only name sets the SYNTAX section declares: a misspelt set would otherwise
    # drop the parameter from every syntax line without a word.
    param([string] $Path, [object] $Command)

    foreach ($parameter in $Command.Parameters) {
        foreach ($set in $parameter.Metadata.Sets) {
            if ($set -cne '(All)' -and $set -cnotin $Command.Sets) {
                $message = "-$($parameter.Name) names the parameter set '$set', which ## SYNTAX does not " +
                    "list ($($Command.Sets -join ', '))"
                throw (New-HelpError $Path $parameter.Line $message)
            }
        }
    }
}

function Get-HelpSyntaxParameter {
    # The parameters of one set with the metadata that applies there, ordered as PowerShell shows
    # syntax: positional ones by position, then the rest in page order.
    param([object] $Command, [string] $Set)

    $index = 0
    $entries = foreach ($parameter in $Command.Parameters) {
        $index++
        # A page with one unnamed parameter set puts every parameter in it.
        $metadata = $parameter.Metadata | Where-Object {
            $Set -eq '__AllParameterSets' -or $_.Sets -ccontains '(All)' -or $_.Sets -ccontains $Set
        } | Select-Object -First 1
        if ($null -eq $metadata) { continue }
        $order = if ($metadata.Position -eq 'named') { [int]::MaxValue } else { [int]$metadata.Position }
        [pscustomobject]@{ Parameter = $parameter; Metadata = $metadata; Order = $order; Index = $index }
    }
    @($entries | Sort-Object Order, Index)
}

function Get-HelpNamespace {
    # The MAML namespaces by prefix. Declared once on <helpItems>, so elements carry only the prefix.
    [ordered]@{
        maml    = 'http://schemas.microsoft.com/maml/2004/10'
        command = 'http://schemas.microsoft.com/maml/dev/command/2004/10'
        dev     = 'http://schemas.microsoft.com/maml/dev/2004/10'
        MSHelp  = 'http://msdn.microsoft.com/mshelp'
    }
}

function Start-HelpElement {
    # Takes prefixed names ('maml:para') so the writer code reads like the MAML it writes.
    param([System.Xml.XmlWriter] $Writer, [string] $Name)
    $prefix, $local = $Name -split ':', 2
    $Writer.WriteStartElement($prefix, $local, (Get-HelpNamespace)[$prefix])
}

function Write-HelpElement {
    param([System.Xml.XmlWriter] $Writer, [string] $Name, [string] $Text)
    Start-HelpElement $Writer $Name
    $Writer.WriteString($Text)
    $Writer.WriteEndElement()
}

function Write-HelpParagraph {
    # A container of maml:para elements; Get-Help prints each para as its own block.
    param([System.Xml.XmlWriter] $Writer, [string] $Name, [string[]] $Paragraph)
    Start-HelpElement $Writer $Name
    foreach ($text in $Paragraph) { Write-HelpElement $Writer 'maml:para' $text }
    $Writer.WriteEndElement()
}

function Write-HelpParameter {
    param([System.Xml.XmlWriter] $Writer, [object] $Parameter, [object] $Metadata, [switch] $InSyntax)

    $isArray = $Metadata.Type.EndsWith('[]')
    $isSwitch = $Metadata.Type -eq 'SwitchParameter'
    Start-HelpElement $Writer 'command:parameter'
    $Writer.WriteAttributeString('required', $Metadata.Required.ToString().ToLowerInvariant())
    $Writer.WriteAttributeString('variableLength', $isArray.ToString().ToLowerInvariant())
    $Writer.WriteAttributeString('globbing', $Metadata.Globbing.ToString().ToLowerInvariant())
    $Writer.WriteAttributeString('pipelineInput', $Metadata.Pipeline)
    $Writer.WriteAttributeString('position', $Metadata.Position)
    $aliases = if ($Metadata.Aliases.Count -gt 0) { $Metadata.Aliases -join ', ' } else { 'none' }
    $Writer.WriteAttributeString('aliases', $aliases)
    Write-HelpElement $Writer 'maml:name' $Parameter.Name
    Write-HelpParagraph $Writer 'maml:description' $Parameter.Description
    if ($InSyntax -and $Metadata.AcceptedValues.Count -gt 0) {
        Start-HelpElement $Writer 'command:parameterValueGroup'
        foreach ($value in $Metadata.AcceptedValues) {
            Start-HelpElement $Writer 'command:parameterValue'
            $Writer.WriteAttributeString('required', 'false')
            $Writer.WriteAttributeString('variableLength', 'false')
            $Writer.WriteString($value)
            $Writer.WriteEndElement()
        }
        $Writer.WriteEndElement()
    }
    # In syntax a switch shows as [-Name] without a <SwitchParameter> value after it.
    if (-not ($InSyntax -and $isSwitch)) {
        Start-HelpElement $Writer 'command:parameterValue'
        $Writer.WriteAttributeString('required', (-not $isSwitch).ToString().ToLowerInvariant())
        $Writer.WriteAttributeString('variableLength', $isArray.ToString().ToLowerInvariant())
        $Writer.WriteString($Metadata.Type)
        $Writer.WriteEndElement()
    }
    Start-HelpElement $Writer 'dev:type'
    Write-HelpElement $Writer 'maml:name' $Metadata.Type
    Write-HelpElement $Writer 'maml:uri' ''
    $Writer.WriteEndElement()
    Write-HelpElement $Writer 'dev:defaultValue' $Metadata.Default
    $Writer.WriteEndElement()
}

function Write-HelpCommand {
    param([System.Xml.XmlWriter] $Writer, [object] $Command)

    $verb, $noun = $Command.Name -split '-', 2
    Start-HelpElement $Writer 'command:command'

    Start-HelpElement $Writer 'command:details'
    Write-HelpElement $Writer 'command:name' $Command.Name
    Write-HelpElement $Writer 'command:verb' $verb
    Write-HelpElement $Writer 'command:noun' $noun
    Write-HelpParagraph $Writer 'maml:description' $Command.Synopsis
    $Writer.WriteEndElement()

    Write-HelpParagraph $Writer 'maml:description' $Command.Description

    Start-HelpElement $Writer 'command:syntax'
    foreach ($set in $Command.Sets) {
        Start-HelpElement $Writer 'command:syntaxItem'
        Write-HelpElement $Writer 'maml:name' $Command.Name
        foreach ($entry in (Get-HelpSyntaxParameter -Command $Command -Set $set)) {
            Write-HelpParameter $Writer $entry.Parameter $entry.Metadata -InSyntax
        }
        $Writer.WriteEndElement()
    }
    $Writer.WriteEndElement()

    # The parameter list shows each parameter once, with its first metadata block (as PlatyPS).
    Start-HelpElement $Writer 'command:parameters'
    foreach ($parameter in $Command.Parameters) {
        Write-HelpParameter $Writer $parameter $parameter.Metadata[0]
    }
    $Writer.WriteEndElement()

    foreach ($group in @{ Name = 'inputTypes'; Item = 'inputType'; Types = $Command.Inputs },
        @{ Name = 'returnValues'; Item = 'returnValue'; Types = $Command.Outputs }) {
        Start-HelpElement $Writer "command:$($group.Name)"
        foreach ($type in $group.Types) {
            Start-HelpElement $Writer "command:$($group.Item)"
            Start-HelpElement $Writer 'dev:type'
            Write-HelpElement $Writer 'maml:name' $type.Type
            $Writer.WriteEndElement()
            Write-HelpParagraph $Writer 'maml:description' $type.Description
            $Writer.WriteEndElement()
        }
        $Writer.WriteEndElement()
    }

    Start-HelpElement $Writer 'maml:alertSet'
    Write-HelpParagraph $Writer 'maml:alert' $Command.Notes
    $Writer.WriteEndElement()

    Start-HelpElement $Writer 'command:examples'
    foreach ($example in $Command.Examples) {
        Start-HelpElement $Writer 'command:example'
        Write-HelpElement $Writer 'maml:title' "---------- $($example.Title) ----------"
        Write-HelpElement $Writer 'dev:code' $example.Code
        # The empty para keeps a blank line between one example's remarks and the next title.
        Write-HelpParagraph $Writer 'dev:remarks' (@($example.Remarks) + '')
        $Writer.WriteEndElement()
    }
    $Writer.WriteEndElement()

    Start-HelpElement $Writer 'command:relatedLinks'
    foreach ($link in $Command.Links) {
        Start-HelpElement $Writer 'maml:navigationLink'
        Write-HelpElement $Writer 'maml:linkText' $link.Text
        Write-HelpElement $Writer 'maml:uri' $link.Uri
        $Writer.WriteEndElement()
    }
    $Writer.WriteEndElement()

    $Writer.WriteEndElement()
}

function Write-HelpMaml {
    # XmlWriter does the escaping, so '<', '&' and quotes in examples reach Get-Help intact.
    param([object[]] $Command, [string] $Path)

    New-Item -ItemType Directory -Force -Path ([System.IO.Path]::GetDirectoryName($Path)) | Out-Null
    $settings = [System.Xml.XmlWriterSettings]::new()
    $settings.Indent = $true
    $settings.Encoding = [System.Text.UTF8Encoding]::new($false)
    $writer = [System.Xml.XmlWriter]::Create($Path, $settings)
    try {
        $writer.WriteStartDocument()
        $writer.WriteStartElement('helpItems')
        $writer.WriteAttributeString('schema', 'maml')
        $namespaces = Get-HelpNamespace
        foreach ($prefix in $namespaces.Keys) {
            $writer.WriteAttributeString('xmlns', $prefix, $null, $namespaces[$prefix])
        }
        foreach ($c in $Command) { Write-HelpCommand $writer $c }
        $writer.WriteEndElement()
        $writer.WriteEndDocument()
    }
    finally {
        $writer.Dispose()
    }
}
