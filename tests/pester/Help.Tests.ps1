# Help for every exported cmdlet. What Get-Help shows comes from docs/<Cmdlet>.md through the MAML
# file the build writes (build/Help.ps1), so these tests catch a cmdlet without a page, help that did
# not reach the module, a parameter nobody described, and a page that no longer matches the cmdlet.
# They need no VM.

BeforeDiscovery {
    # Test cases are built at discovery, before any BeforeAll runs, so the module is imported here
    # as well: its cmdlets and their parameters are the test data.
    $manifest = if ($env:MSB_TEST_MODULE) { $env:MSB_TEST_MODULE }
    else { Join-Path $PSScriptRoot '../../out/Microsandbox/Microsandbox.psd1' }
    $module = Import-Module $manifest -PassThru -ErrorAction Stop
    $common = [System.Management.Automation.Cmdlet]::CommonParameters
    $cmdlets = foreach ($name in ($module.ExportedCmdlets.Keys | Sort-Object)) {
        $parameters = (Get-Command $name).Parameters.Keys | Where-Object { $_ -notin $common } | Sort-Object
        @{
            Name       = $name
            Parameters = @($parameters | ForEach-Object { @{ Cmdlet = $name; Parameter = $_ } })
        }
    }
}

Describe 'Help' -Tag 'Help' {
    BeforeAll {
        # MSB_TEST_MODULE is set by './build.ps1 Test'; the fallback serves a direct Invoke-Pester
        # after './build.ps1 Build'.
        $manifest = if ($env:MSB_TEST_MODULE) { $env:MSB_TEST_MODULE }
        else { Join-Path $PSScriptRoot '../../out/Microsandbox/Microsandbox.psd1' }
        Import-Module $manifest -ErrorAction Stop
        # The build's own page parser, so the tests read the pages exactly as the build does.
        . (Join-Path $PSScriptRoot '../../build/Help.ps1')
        $docs = Join-Path $PSScriptRoot '../../docs'
    }

    Context '<Name>' -ForEach $cmdlets {
        BeforeAll {
            $help = Get-Help -Name $Name -Full
            $pagePath = Join-Path $docs "$Name.md"
            $page = if (Test-Path -LiteralPath $pagePath) { Read-HelpPage -Path $pagePath }
        }

        It 'has a page in docs/' {
            $pagePath | Should -Exist
        }

        It 'has a synopsis written for it' {
            $synopsis = "$($help.Synopsis)".Trim()
            $synopsis | Should -Not -BeNullOrEmpty
            # Without help, Get-Help makes the synopsis from the syntax, which starts with the name.
            $synopsis | Should -Not -Match "^$([regex]::Escape($Name))(\s|$)" -Because 'the MAML should load'
        }

        It 'has a description' {
            (@($help.description.Text) -join '').Trim() | Should -Not -BeNullOrEmpty
        }

        It 'has at least one example, each with code' {
            $examples = @($help.examples.example)
            $examples.Count | Should -BeGreaterOrEqual 1
            foreach ($example in $examples) {
                "$($example.code)".Trim() | Should -Not -BeNullOrEmpty -Because "$($example.title) needs code"
            }
        }

        It 'documents only parameters the cmdlet has' {
            $declared = @($Parameters | ForEach-Object { $_.Parameter })
            $unknown = @($page.Parameters | Where-Object { $_.Name -notin $declared } | ForEach-Object Name)
            $unknown | Should -BeNullOrEmpty -Because "docs/$Name.md should document only what $Name has"
        }

        It 'describes -<Parameter>' -ForEach $Parameters {
            $entry = @($help.parameters.parameter) | Where-Object { $_.name -eq $Parameter }
            $entry | Should -Not -BeNullOrEmpty -Because "Get-Help $Cmdlet should list -$Parameter"
            (@($entry.description.Text) -join '').Trim() | Should -Not -BeNullOrEmpty
        }

        It 'documents -<Parameter> as the cmdlet declares it' -ForEach $Parameters {
            $doc = $page.Parameters | Where-Object { $_.Name -eq $Parameter }
            $doc | Should -Not -BeNullOrEmpty -Because "docs/$Cmdlet.md should document -$Parameter"
            $declared = (Get-Command $Cmdlet).Parameters[$Parameter]

            $doc.Metadata[0].Type | Should -Be $declared.ParameterType.Name
            $wildcards = [bool]($declared.Attributes |
                Where-Object { $_ -is [System.Management.Automation.SupportsWildcardsAttribute] })
            $doc.Metadata[0].Globbing | Should -Be $wildcards -Because 'of Accept wildcard characters'

            # The sets the page names, with (All) standing for every set, as PlatyPS writes it.
            $documentedSets = @($doc.Metadata.Sets | Sort-Object -Unique)
            $declaredSets = @($declared.ParameterSets.Keys | Sort-Object)
            $expectedSets = if ($declaredSets -ceq '__AllParameterSets') { @('(All)') } else { $declaredSets }
            $documentedSets -join ', ' | Should -Be ($expectedSets -join ', ')

            foreach ($set in $declared.ParameterSets.GetEnumerator()) {
                $block = $doc.Metadata |
                    Where-Object { $_.Sets -ccontains '(All)' -or $_.Sets -ccontains $set.Key } |
                    Select-Object -First 1
                $position = if ($set.Value.Position -lt 0) { 'named' } else { "$($set.Value.Position)" }
                $sources = @(
                    if ($set.Value.ValueFromPipeline) { 'ByValue' }
                    if ($set.Value.ValueFromPipelineByPropertyName) { 'ByPropertyName' }
                )
                $pipeline = if ($sources) { "True ($($sources -join ', '))" } else { 'False' }
                # One string per set, so a failure shows every difference in that set at once.
                $expected = "Required=$($set.Value.IsMandatory) Position=$position Pipeline=$pipeline"
                "Required=$($block.Required) Position=$($block.Position) Pipeline=$($block.Pipeline)" |
                    Should -Be $expected -Because "in parameter set $($set.Key)"
            }
        }
    }
}
